"""SGLang's recipes: the April 2025 ones against the seed's own commands, held here as data; every
current one (prefill/decode layouts and two-node forms included) line by line through the pinned
SGLang's parser and its router's; and what the current ones must set so a run is not capped by a default.
Rendering and the parser run are test_serve_recipes.py's (`just PRINT=1 ...`, the CPU engine's venv)."""

from __future__ import annotations

import json
import shlex
import subprocess
import tomllib
from itertools import product
from pathlib import Path

import pytest

from test_serve_recipes import NODE_ARGS, PARSER_CHECK, ROOT, group_of, just, parser_python, render_env

SEEDS = ROOT.parent / "shared" / "seeds"
REPO = SEEDS / "r1-benchmark-repo"
MODEL = "/DeepSeek-R1"

# ---- the seed's SGLang commands (April 2025), as data ----
#
# The seed ran SGLang through `uv run --with 'sglang[all]==V' python -m sglang.launch_server`, with
# SGL_ENV "SGL_ENABLE_JIT_DEEPGEMM=1" before it and, until 04/18, the common flags
# "--trust-remote-code --enable-flashinfer-mla --disable-radix-cache" (its Justfile's SGL_SERVE_ARGS,
# history.patch from 2d35e99 on; at-bfdda0d/Justfile; at-125389c/Justfile), then `--model PATH --tp 8`
# and the layout's flags. Each entry: the release, the environment, the flags, and where each was read
# (file, and a line of it that holds the flags verbatim, checked below when the seed files are at hand).
SEED_ENV = {"SGL_ENABLE_JIT_DEEPGEMM": "1"}
SEED_COMMON_0425 = [
    "--model",
    MODEL,
    "--tp",
    "8",
    "--trust-remote-code",
    "--enable-flashinfer-mla",
    "--disable-radix-cache",
]
SEED = {
    # 04/11: the seed's first 0.4.5 numbers (README "As of April 11, 2025 ... SGL v0.4.5"), TP8 compiled.
    "sgl-0425-serve": {
        "version": "0.4.5",
        "env": SEED_ENV,
        "argv": SEED_COMMON_0425 + ["--enable-torch-compile", "--torch-compile-max-bs", "8"],
        "sources": [
            ("history.patch", "+    --with 'sglang[all]==0.4.5' \\"),  # cc40c64, 04/11
            ("history.patch", '+    SGL_ARGS="{{SGL_SERVE_ARGS}} --enable-torch-compile --torch-compile-max-bs 8"'),
            (
                "history.patch",
                '+SGL_SERVE_ARGS := COMMON_SERVE_ARGS + " --enable-flashinfer-mla --disable-radix-cache"',
            ),
        ],
    },
    # 04/14-04/17: "use ep for sgl" and the seed document's state: --expert-parallel-size 8 with NO
    # --enable-ep-moe (so 0.4.5 ran the MoE tensor-parallel), the seed's best SGLang numbers.
    "sgl-0425-serve-compile": {
        "version": "0.4.5",
        "env": SEED_ENV,
        "argv": SEED_COMMON_0425
        + ["--enable-torch-compile", "--torch-compile-max-bs", "8", "--expert-parallel-size", "8"],
        "sources": [
            ("at-125389c/Justfile", "--with 'sglang[all]==0.4.5' \\"),
            (
                "at-125389c/Justfile",
                'SGL_SERVE_ARGS="--trust-remote-code --enable-flashinfer-mla --disable-radix-cache"',
            ),
            (
                "at-125389c/Justfile",
                'SGL_SERVE_ARGS="${SGL_SERVE_ARGS} --enable-torch-compile'
                ' --torch-compile-max-bs 8 --expert-parallel-size 8"',
            ),
            ("at-125389c/Justfile", "SGL_ENABLE_JIT_DEEPGEMM=1 just uvx-sgl python -m sglang.launch_server"),
        ],
    },
    # 04/14 "use dp+ep for sgl": DP attention without torch compile (the two crashed together).
    "sgl-0425-serve-dp": {
        "version": "0.4.5",
        "env": SEED_ENV,
        "argv": SEED_COMMON_0425
        + ["--enable-dp-attention", "--data-parallel-size", "8", "--expert-parallel-size", "8"],
        "sources": [
            ("at-bfdda0d/Justfile", 'SGL_ENV := "SGL_ENABLE_JIT_DEEPGEMM=1"'),
            (
                "at-bfdda0d/Justfile",
                'SGL_SERVE_ARGS := COMMON_SERVE_ARGS + " --enable-flashinfer-mla --disable-radix-cache"',
            ),
            (
                "at-bfdda0d/Justfile",
                'SGL_ARGS="{{SGL_SERVE_ARGS}} --enable-dp-attention --data-parallel-size 8 --expert-parallel-size 8"',
            ),
            ("at-bfdda0d/Justfile", "--with 'sglang[all]==0.4.5' \\"),
        ],
    },
    # 04/14-04/16: DeepEP, which crashed at start-up ("nvshmem detect topo failed").
    "sgl-0425-serve-deepep": {
        "version": "0.4.5",
        "env": SEED_ENV,
        "argv": SEED_COMMON_0425 + ["--enable-deepep-moe", "--deepep-mode", "auto"],
        "sources": [
            ("at-bfdda0d/Justfile", '# SGL_ARGS="{{SGL_SERVE_ARGS}} --enable-deepep-moe --deepep-mode auto"'),
            (
                "../000_6174fd2ea080c424.txt",
                'SGL_SERVE_ARGS="${SGL_SERVE_ARGS} --enable-deepep-moe --deepep-mode auto"',
            ),
        ],
    },
    # 04/18, the results published that day: 0.4.5.post1 with DP attention by --dp-size, and neither
    # FlashInfer MLA nor an EP flag (LOG.md 04/18: "we have removed flash mla and expert parallel flag").
    "sgl-0425-serve-dp-0418": {
        "version": "0.4.5.post1",
        "env": SEED_ENV,
        "argv": ["--model", MODEL, "--tp", "8", "--trust-remote-code", "--disable-radix-cache"]
        + ["--enable-dp-attention", "--dp-size", "8"],
        "sources": [
            ("at-HEAD/Justfile", "--with 'sglang[all]==0.4.5.post1' \\"),
            ("at-HEAD/Justfile", 'SGL_SERVE_ARGS="--trust-remote-code --disable-radix-cache"'),
            ("at-HEAD/Justfile", 'SGL_SERVE_ARGS="${SGL_SERVE_ARGS} --enable-dp-attention --dp-size 8"'),
            ("at-HEAD/Justfile", "SGL_ENABLE_JIT_DEEPGEMM=1 just uvx-sgl python -m sglang.launch_server"),
            ("at-HEAD/LOG.md", "--enable-dp-attention --dp-size 8"),
        ],
    },
}
# What the recipes add to the seed's commands, and why that changes nothing: the address (--host, the
# seed's was SGLang's default 127.0.0.1; --port, 30000 and later 8000 there), and the model flag's full
# spelling (--model is argparse's prefix of --model-path, the only 0.4.5 option it starts).
PLUMBING = {"--host", "--port"}
SPELLING = {"--model": "--model-path"}


def render(recipe: str, *args: str, **env: str) -> str:
    out = just(recipe, *args, env=render_env(**env))
    assert out.returncode == 0, f"just PRINT=1 {recipe} {' '.join(args)} failed:\n{out.stderr}"
    return out.stdout.strip()


def split_command(line: str, marker: str) -> tuple[dict, list[str], list[str]]:
    """(environment, launcher words, engine argv) of one rendered command, venv or docker form."""
    words = shlex.split(line)
    i = next(i for i, w in enumerate(words) if w == marker)
    head, env = words[: i - 1], {}
    if head[0] == "env":
        env = dict(w.split("=", 1) for w in head[1:] if "=" in w)
    elif head[0] == "docker":
        env = dict(head[j + 1].split("=", 1) for j, w in enumerate(head) if w == "-e")
    return env, words[: i + 1], words[i + 1 :]


def flags(argv: list[str]) -> dict[str, str | bool]:
    """`--flag value` and bare `--flag` of an engine's argv, as a dict."""
    out, i = {}, 0
    while i < len(argv):
        assert argv[i].startswith("--"), f"stray word {argv[i]!r} in {argv}"
        has_value = i + 1 < len(argv) and not argv[i + 1].startswith("--")
        out[argv[i]] = argv[i + 1] if has_value else True
        i += 2 if has_value else 1
    return out


def options(argv: list[str]) -> dict[str, str | bool]:
    """flags() with the seed's spellings made full and the plumbing left out."""
    return {SPELLING.get(k, k): v for k, v in flags(argv).items() if k not in PLUMBING}


@pytest.mark.parametrize("via", ["venv", "docker"])
@pytest.mark.parametrize("recipe", sorted(SEED))
def test_april_2025_recipes_are_the_seeds_commands(recipe, via):
    seed = SEED[recipe]
    env, launcher, argv = split_command(render(recipe, SGL_VIA=via), "sglang.launch_server")
    assert env == seed["env"], f"{recipe}: environment differs from the seed's"
    assert options(argv) == options(seed["argv"]), f"{recipe}: flags differ from the seed's"
    where = (
        f".venvs/sglang-{seed['version']}/bin/python3" if via == "venv" else f"lmsysorg/sglang:v{seed['version']}-cu124"
    )
    assert any(w.endswith(where) for w in launcher), f"{recipe} does not run SGLang {seed['version']}: {launcher}"


def test_the_seeds_flags_held_here_are_in_the_seeds_files():
    if not REPO.is_dir():
        pytest.skip(f"the seed's files are not at {REPO}")
    for recipe, seed in SEED.items():
        for file, text in seed["sources"]:
            assert text in (REPO / file).read_text(), f"{recipe}: {text!r} is not in {file}"


def test_the_seed_spelled_the_model_with_an_argparse_prefix():
    # SPELLING's premise, from the seed's own Justfiles: `--model PATH` (never --model-path) with --tp.
    if not REPO.is_dir():
        pytest.skip(f"the seed's files are not at {REPO}")
    for file in ("at-bfdda0d/Justfile", "at-125389c/Justfile", "at-HEAD/Justfile"):
        text = (REPO / file).read_text()
        assert "--model {{model_path}}" in text and "--model-path" not in text, file


def test_the_april_2025_pins():
    assert just("--evaluate", "sgl_0425_version", env=render_env()).stdout == "0.4.5"
    assert just("--evaluate", "sgl_0418_version", env=render_env()).stdout == "0.4.5.post1"


# ---- every current SGLang command, line by line, through the pinned parsers ----

ROUTER_CHECK = r"""
import contextlib, io, json, sys, importlib.metadata as md
from sglang_router.launch_router import parse_router_args
jobs = json.load(open(sys.argv[1]))

def attempt(argv):
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            parse_router_args(argv)
    except SystemExit as e:
        lines = err.getvalue().strip().splitlines()
        return lines[-1] if lines else f"exit {e.code}"
    except Exception as e:
        return repr(e)
    return None

json.dump({"version": md.version("sglang-router"), "errors": [attempt(a) for a in jobs]}, open(sys.argv[2], "w"))
"""
ENGINE, ROUTER = "sglang.launch_server", "sglang_router.launch_router"


@pytest.fixture(scope="module")
def current() -> dict[tuple[str, str], list[str]]:
    """(recipe, variant) -> the lines `just PRINT=1` prints, for every current SGLang serve recipe."""
    dump = json.loads(just("--dump", "--dump-format", "json").stdout)["recipes"]
    out = {}
    for name, r in sorted(dump.items()):
        params = [p["name"] for p in r["parameters"]]
        if r["private"] or group_of(r) != "sglang" or "port" not in params:
            continue
        node = [p for p in params if p in NODE_ARGS]
        for args in product(*(NODE_ARGS[p] for p in node)):
            for via in ("venv", "docker"):
                out[(name, " ".join([f"SGL_VIA={via}", *args]))] = render(name, *args, SGL_VIA=via).splitlines()
    return out


def run_in_parser_venv(script: str, jobs, tmp: Path) -> dict:
    (tmp / "in.json").write_text(json.dumps(jobs))
    run = subprocess.run(
        [str(parser_python()), "-c", script, str(tmp / "in.json"), str(tmp / "out.json")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, f"the parser check crashed (run `just sgl-parser-install`):\n{run.stderr[-3000:]}"
    return json.loads((tmp / "out.json").read_text())


def test_every_current_line_passes_sglangs_and_its_routers_parsers(current, tmp_path):
    engines, routers = [], []
    for (name, variant), lines in current.items():
        for n, line in enumerate(lines, 1):
            kind = ENGINE if ENGINE in line else ROUTER
            assert kind in line, f"{name} {variant}: a line that starts neither SGLang nor its router: {line}"
            where = f"{name} {variant} line {n}"
            (engines if kind == ENGINE else routers).append((where, split_command(line, kind)[2]))
    assert len(engines) >= 30 and len(routers) >= 4
    bad = ["--model-path", MODEL, "--tp-size", "8", "--enable-ep-moe"]  # removed at 0.5.x: must be refused
    out = run_in_parser_venv(PARSER_CHECK, {"vllm": [], "sglang": [a for _, a in engines] + [bad]}, tmp_path)
    *errors, refused = out["sglang"]
    rejected = {where: e for (where, _), e in zip(engines, errors) if e}
    assert not rejected, f"SGLang {out['versions']['sglang']} rejects: {rejected}"
    assert refused and "--enable-ep-moe" in refused
    out = run_in_parser_venv(
        ROUTER_CHECK, [a for _, a in routers] + [["--pd-disaggregation", "--no-such-flag"]], tmp_path
    )
    *errors, refused = out["errors"]
    rejected = {where: e for (where, _), e in zip(routers, errors) if e}
    assert not rejected, f"sglang-router {out['version']} rejects: {rejected}"
    assert refused and "--no-such-flag" in refused
    pin = just("--evaluate", "sgl_router_version", env=render_env()).stdout
    assert out["version"] == pin, "the router parser checked is not the pinned sglang-router"


# ---- what the current commands set, so that no default caps or blurs a run ----


def top_concurrency() -> int:
    """The most requests a point of the seed or industry set can have in flight (an uncapped rate point:
    all of its prompts)."""
    top = 0
    for name in ("seed", "industry"):
        data = tomllib.loads((ROOT / "recipes" / "scenarios" / f"{name}.toml").read_text())
        for s in data["scenario"]:
            cap = max(s.get("concurrency", data.get("concurrency", [0])))
            top = max(top, cap or s.get("num_prompts", data.get("num_prompts", 0)))
    return top


def engine_options(current) -> dict[tuple[str, str, int], dict]:
    return {
        (*key, i): options(split_command(line, ENGINE)[2])
        for key, lines in current.items()
        for i, line in enumerate(lines)
        if ENGINE in line
    }


def test_current_commands_cover_the_top_concurrency_and_record_their_settings(current):
    top = top_concurrency()
    assert top >= 256
    for (name, variant, i), o in engine_options(current).items():
        where = f"{name} {variant} line {i + 1}"
        assert o.get("--kv-cache-dtype") == "fp8_e4m3", where
        assert o.get("--stream-interval", "").isdigit(), f"{where}: --stream-interval is not written out"
        running = int(o["--max-running-requests"])
        assert running >= top, f"{where}: {running} running requests queue the set's top point ({top})"
        ranks = int(o.get("--attn-dp-size", 1))
        if ranks > 1:
            assert "--enable-dp-lm-head" in o, where
        if o.get("--disaggregation-mode") != "prefill":
            assert int(o["--cuda-graph-max-bs-decode"]) >= running // ranks, (
                f"{where}: decode runs eagerly above graphs"
            )
        if o.get("--moe-a2a-backend") == "deepep":
            assert o.get("--moe-runner-backend") == "deep_gemm", where
        if "--speculative-algorithm" in o:
            steps = (o["--speculative-num-steps"], o["--speculative-eagle-topk"], o["--speculative-num-draft-tokens"])
            assert steps == ("2", "1", "3"), f"{where}: not InferenceX's H200 draft settings"


def test_no_current_command_sets_nvshmem(current):
    for key, lines in current.items():
        assert not any("NVSHMEM" in line for line in lines), f"{key}: NVSHMEM settings nothing at the pin reads"


# ---- prefill/decode layouts: one command per process, wired to each other ----


def processes(lines: list[str]) -> list[tuple[str, dict | list[str]]]:
    """(what, arguments) per printed line: a server's --disaggregation-mode and flags, or the router's argv."""
    out = []
    for line in lines:
        if ROUTER in line:
            out.append(("router", split_command(line, ROUTER)[2]))
        else:
            f = flags(split_command(line, ENGINE)[2])
            out.append((f.get("--disaggregation-mode", "none"), f))
    return out


@pytest.mark.parametrize(
    "variant,want",
    [
        (("sgl-serve-pd", "SGL_VIA=venv"), ["prefill", "decode", "router"]),
        (("sgl-serve-pd", "SGL_VIA=docker"), ["prefill", "decode", "router"]),
        (("sgl-serve-pd-2node", "SGL_VIA=venv 10.0.0.1 10.0.0.2 0"), ["prefill", "router"]),
        (("sgl-serve-pd-2node", "SGL_VIA=venv 10.0.0.1 10.0.0.2 1"), ["decode"]),
    ],
)
def test_prefill_decode_layouts_print_every_process_and_wire_them(current, variant, want):
    procs = processes(current[variant])
    assert [what for what, _ in procs] == want
    servers = {what: f for what, f in procs if what != "router"}
    for f in servers.values():
        assert f["--disaggregation-transfer-backend"] == "nixl"
    if "router" not in want:
        return
    argv = dict(procs)["router"]
    assert argv[0] == "--pd-disaggregation"
    at = argv.index("--prefill")
    prefill, bootstrap, decode = argv[at + 1], argv[at + 2], argv[argv.index("--decode") + 1]
    assert bootstrap == just("--evaluate", "sgl_pd_bootstrap_port", env=render_env()).stdout
    p = servers["prefill"]
    assert (prefill, bootstrap) == (f"http://{p['--host']}:{p['--port']}", p["--disaggregation-bootstrap-port"])
    if "decode" in servers:
        d = servers["decode"]
        assert decode == f"http://{d['--host']}:{d['--port']}"
        assert (p["--base-gpu-id"], d["--base-gpu-id"], p["--tp-size"], d["--tp-size"]) == ("0", "4", "4", "4")
    else:  # the decode server runs on the worker node, as rank 1 of the same recipe prints it
        d = dict(processes(current[("sgl-serve-pd-2node", "SGL_VIA=venv 10.0.0.1 10.0.0.2 1")]))["decode"]
        assert decode == f"http://{d['--host']}:{d['--port']}" == "http://10.0.0.2:" + d["--port"]


def test_prefill_decode_print_mode_starts_nothing(tmp_path):
    out = just("sgl-serve-pd", env=render_env(BENCH_RUN_DIR=str(tmp_path)))
    assert out.returncode == 0 and out.stdout.count("\n") == 3 and out.stderr == ""
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "recipe,args",
    [("sgl-serve-pd-2node", ["10.0.0.1", "10.0.0.2", "2"]), ("sgl-serve-deepep-2node", ["10.0.0.1", "2"])],
)
def test_two_node_layouts_refuse_a_third_rank(recipe, args):
    out = just(recipe, *args, env=render_env())
    assert out.returncode != 0 and "0 (head" in out.stderr


def test_stop_recipe_stops_the_layouts_group():
    out = just("--dry-run", "sgl-stop-pd", env=render_env())
    assert "bench.serve.launcher stop --group sglang-pd" in out.stderr


# ---- installing: the image follows the version asked for ----


@pytest.mark.parametrize(
    "version,image",
    [
        ("", "lmsysorg/sglang:v0.5.23"),
        ("0.5.22", "lmsysorg/sglang:v0.5.22"),
        ("0.4.5", "lmsysorg/sglang:v0.4.5-cu124"),
        ("0.4.5.post1", "lmsysorg/sglang:v0.4.5.post1-cu124"),
    ],
)
def test_sgl_install_pulls_the_image_of_the_version_asked_for(version, image):
    out = just("--dry-run", "sgl-install", *([version] if version else []), env=render_env(SGL_VIA="docker"))
    assert f"docker pull '{image}'" in out.stderr, out.stderr
