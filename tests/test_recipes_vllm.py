"""The vLLM serve recipes: the April 2025 commands against the seed's flags, kept here as data; every
current command, each process of a prefill/decode layout included, rendered both ways (venv and docker)
and through the pinned vLLM's and vllm-router's own parsers; the serving settings against the scenario
sets; the refusals that come before anything starts."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import tomllib
from pathlib import Path

import pytest

from test_serve_recipes import ROOT, just, parser_python, render_env, vllm_parser_env

SEEDS = ROOT.parent / "shared" / "seeds" / "r1-benchmark-repo"

# ---- the seed's vLLM commands (simon-mo/R1-Benchmark, April 2025), as data ----
# Sources, in ../shared/seeds/r1-benchmark-repo/ (history.patch holds every change of its Justfile):
# - Justfile `_serve-vllm`, from commit 2e14b23 (2025-04-16, "refactor script") to the end (at-HEAD/):
#   VLLM_USE_FLASHINFER_SAMPLER=1 in front of `vllm serve {{model_path}} --tensor-parallel-size {{tp}}`
#   with --trust-remote-code --no-enable-prefix-caching --disable-log-requests; tp is 8 for deepseek-r1
#   (DEEPSEEK_R1_TP). The README's flag list of 04/18 (commit c28e1dc) names the same sampler setting.
# - The DeepSeek-R1 branch of `_serve-vllm` added --enable-expert-parallel (2e14b23, as at-125389c/);
#   commit 76c8aa1 (04/18) commented it out for the plain "vLLM" column and the README's "vLLM_EP"
#   column (c28e1dc) is the same command with it: the two runs published on 2025-04-18.
# - `uvx-vllm`: vllm==0.8.4 (2e14b23, and cc40c64 before 5c6dda1 went to 0.8.3 for a week) with
#   setuptools and the FlashInfer v0.2.2 wheel for CUDA 12.4 / torch 2.6 (since cc40c64), Python 3.11.
# - No --host or --port: vLLM's defaults (all addresses, 8000) served the seed's client, which used 8000.
SEED_VERSION = "0.8.4"
SEED_FLASHINFER = (
    "https://github.com/flashinfer-ai/flashinfer/releases/download/v0.2.2/"
    "flashinfer_python-0.2.2+cu124torch2.6-cp38-abi3-linux_x86_64.whl"
)
SEED_ENV = {"VLLM_USE_FLASHINFER_SAMPLER": "1"}
SEED_TP8 = [
    ("--tensor-parallel-size", "8"),
    ("--trust-remote-code", None),
    ("--no-enable-prefix-caching", None),
    ("--disable-log-requests", None),
]
SEED = {"vllm-0425-serve": SEED_TP8, "vllm-0425-serve-ep": [*SEED_TP8, ("--enable-expert-parallel", None)]}
# What the recipes add on purpose: where the server listens (this project's HOST and PORT).
ADDRESSING = {"--host", "--port"}

# ---- the current recipes ----
SINGLE = [
    "vllm-serve",
    "vllm-serve-ep",
    "vllm-serve-dp",
    "vllm-serve-mtp",
    "vllm-serve-dp-mtp",
    "vllm-serve-eplb",
    ("vllm-serve-dp-2node", "10.0.0.1", "0"),
    ("vllm-serve-dp-2node", "10.0.0.1", "1"),
    ("vllm-serve-wide-ep-2node", "10.0.0.1", "0"),
    ("vllm-serve-wide-ep-2node", "10.0.0.1", "1"),
    ("vllm-serve-wide-ep-2node", "10.0.0.1", "0", "deepep_high_throughput"),
]
# A prefill/decode layout prints one command per process it starts, in start order.
PD = {
    ("vllm-serve-pd",): ["prefill", "decode", "router"],
    ("vllm-serve-pd-2node", "10.0.0.1", "10.0.0.2", "prefill"): ["prefill"],
    ("vllm-serve-pd-2node", "10.0.0.1", "10.0.0.2", "decode"): ["decode", "router"],
}
CALLS = [c if isinstance(c, tuple) else (c,) for c in SINGLE] + list(PD)


def render(*call: str, via: str = "venv", **env: str) -> list[str]:
    """The lines `just PRINT=1 <call>` prints, one command each."""
    out = just(*call, env=render_env(VLLM_VIA=via, **env))
    assert out.returncode == 0, f"{' '.join(call)} ({via}): {out.stderr}"
    return out.stdout.strip().splitlines()


def split(line: str) -> tuple[dict, list[str]]:
    """(environment, the program's own words after the executable) of a rendered venv or docker command."""
    words = shlex.split(line)
    if words[:2] == ["docker", "run"]:
        env = dict(words[i + 1].split("=", 1) for i, w in enumerate(words) if w == "-e")
        image = next(i for i, w in enumerate(words) if w.startswith(("vllm/vllm-openai:", "vllm/vllm-router:")))
        rest = words[image + 1 :]
        return env, rest[1:] if rest[:1] == ["vllm-router"] else rest
    env = {}
    if words[0] == "env":
        words = words[1:]
        while "=" in words[0] and not words[0].startswith("/"):
            key, value = words.pop(0).split("=", 1)
            env[key] = value
    return env, words[1:]


def flags(argv: list[str]) -> list[tuple[str, str | None]]:
    """An engine's arguments as (flag, value or None) pairs, in order."""
    pairs, i = [], 0
    while i < len(argv):
        has_value = i + 1 < len(argv) and not argv[i + 1].startswith("-")
        pairs.append((argv[i], argv[i + 1] if has_value else None))
        i += 2 if has_value else 1
    return pairs


@pytest.fixture(scope="module")
def current() -> dict[tuple, list[str]]:
    """(call..., via) -> printed lines, for every current vLLM recipe both ways."""
    return {(*call, via): render(*call, via=via) for call in CALLS for via in ("venv", "docker")}


# ---- April 2025, exactly ----


@pytest.mark.parametrize("via", ["venv", "docker"])
@pytest.mark.parametrize("recipe", sorted(SEED))
def test_april_2025_commands_are_the_seeds(recipe, via):
    [line] = render(recipe, via=via)
    env, argv = split(line)
    assert env == SEED_ENV
    assert argv[:2] == ["serve", "/DeepSeek-R1"]
    given = flags(argv[2:])
    ours = [(f, v) for f, v in given if f not in ADDRESSING]
    assert sorted(ours, key=str) == sorted(SEED[recipe], key=str), f"{recipe} differs from the seed's flags"
    assert dict(given)["--port"] == "8000"  # the seed's server answered on vLLM's default port
    assert f"vllm-{SEED_VERSION}/bin/vllm" in line or f"vllm/vllm-openai:v{SEED_VERSION}" in line


def test_april_2025_install_is_the_seeds():
    assert just("--evaluate", "vllm_0425_version", env=render_env()).stdout == SEED_VERSION
    assert just("--evaluate", "vllm_0425_flashinfer", env=render_env()).stdout == SEED_FLASHINFER


@pytest.mark.skipif(not SEEDS.exists(), reason="the seed repository's files are not beside this checkout")
def test_the_seed_data_here_is_what_the_seed_repository_says():
    final = (SEEDS / "at-HEAD" / "Justfile").read_text()
    serve = final[final.index("_serve-vllm") : final.index("_serve-sgl")]
    assert re.search(
        r"VLLM_SERVE_ARGS=\"--trust-remote-code --no-enable-prefix-caching --disable-log-requests\"", serve
    )
    assert re.search(r"^\s*VLLM_USE_FLASHINFER_SAMPLER=1 just uvx-vllm vllm serve", serve, re.M)
    assert "--tensor-parallel-size {{tp}}" in serve and 'DEEPSEEK_R1_TP := "8"' in final
    assert re.search(r"^\s*# VLLM_SERVE_ARGS=\"\$\{VLLM_SERVE_ARGS\} --enable-expert-parallel\"", serve, re.M)
    ep = (SEEDS / "at-125389c" / "Justfile").read_text()
    assert re.search(r"^\s*VLLM_SERVE_ARGS=\"\$\{VLLM_SERVE_ARGS\} --enable-expert-parallel\"", ep, re.M)
    assert f"--with 'vllm=={SEED_VERSION}'" in final and f"--with {SEED_FLASHINFER}" in final


# ---- the current recipes: rendered both ways, every process ----


def test_every_layout_renders_both_ways_with_one_line_per_process(current):
    for (*call, via), lines in current.items():
        roles = PD.get(tuple(call), ["server"])
        assert len(lines) == len(roles), f"{call} {via}: {lines}"
        for role, line in zip(roles, lines):
            runs_router = role == "router"
            if via == "docker":
                image = "vllm/vllm-router:v" if runs_router else "vllm/vllm-openai:v"
                assert line.startswith("docker run ") and image in line, line
            else:
                assert ("/bin/vllm-router " if runs_router else "/bin/vllm serve ") in line, line


def test_prefill_and_decode_split_the_node_and_meet_at_the_router(current):
    for via in ("venv", "docker"):
        prefill, decode, router = (split(line) for line in current[("vllm-serve-pd", via)])
        assert prefill[0]["CUDA_VISIBLE_DEVICES"] == "0,1,2,3" and decode[0]["CUDA_VISIBLE_DEVICES"] == "4,5,6,7"
        assert prefill[0]["VLLM_NIXL_SIDE_CHANNEL_PORT"] != decode[0]["VLLM_NIXL_SIDE_CHANNEL_PORT"]
        p, d, r = dict(flags(prefill[1][2:])), dict(flags(decode[1][2:])), dict(flags(router[1]))
        assert json.loads(p["--kv-transfer-config"])["kv_role"] == "kv_producer"
        assert json.loads(d["--kv-transfer-config"])["kv_role"] == "kv_consumer"
        assert json.loads(d["--kv-transfer-config"])["kv_connector"] == "NixlConnector"
        assert (
            r["--prefill"] == f"http://127.0.0.1:{p['--port']}" and r["--decode"] == f"http://127.0.0.1:{d['--port']}"
        )
        assert r["--port"] == "8000" and "--vllm-pd-disaggregation" in r and "--disable-retries" in r
        assert r["--intra-node-data-parallel-size"] == p["--data-parallel-size"] == d["--data-parallel-size"] == "4"


def test_two_node_prefill_decode_binds_each_side_to_its_own_address(current):
    [prefill] = current[("vllm-serve-pd-2node", "10.0.0.1", "10.0.0.2", "prefill", "venv")]
    decode, router = current[("vllm-serve-pd-2node", "10.0.0.1", "10.0.0.2", "decode", "venv")]
    (penv, pargv), (denv, dargv) = split(prefill), split(decode)
    assert penv["VLLM_NIXL_SIDE_CHANNEL_HOST"] == "10.0.0.1" and dict(flags(pargv[2:]))["--host"] == "10.0.0.1"
    assert denv["VLLM_NIXL_SIDE_CHANNEL_HOST"] == "10.0.0.2" and dict(flags(dargv[2:]))["--host"] == "10.0.0.2"
    assert "--prefill http://10.0.0.1:8100 --decode http://10.0.0.2:8200" in router


# ---- the pinned parsers ----

PARSE = r"""
import contextlib, io, json, sys
from vllm.utils.argparse_utils import FlexibleArgumentParser
from vllm.entrypoints.cli.serve import ServeSubcommand
from vllm_router.launch_router import parse_router_args

def vllm(argv):
    parser = FlexibleArgumentParser(prog="vllm")
    serve = ServeSubcommand()
    serve.subparser_init(parser.add_subparsers(dest="subparser"))
    serve.validate(parser.parse_args(["serve", *argv]))

def attempt(kind, argv):
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            vllm(argv) if kind == "vllm" else parse_router_args(argv)
    except SystemExit as e:
        lines = err.getvalue().strip().splitlines()
        return lines[-1] if lines else f"exit {e.code}"
    except Exception as e:
        return repr(e)
    return None

jobs = json.load(open(sys.argv[1]))
json.dump([attempt(kind, argv) for kind, argv in jobs], open(sys.argv[2], "w"))
"""


def parse_all(jobs: list[tuple[str, list[str]]], tmp_path: Path) -> list[str | None]:
    (tmp_path / "in.json").write_text(json.dumps(jobs))
    run = subprocess.run(
        [str(parser_python()), "-c", PARSE, str(tmp_path / "in.json"), str(tmp_path / "out.json")],
        capture_output=True,
        text=True,
        timeout=300,
        env=vllm_parser_env(),
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads((tmp_path / "out.json").read_text())


def test_every_process_of_every_layout_passes_the_pinned_parsers(current, tmp_path):
    jobs, names = [], []
    for key, lines in current.items():
        for line in lines:
            _, argv = split(line)
            kind = "vllm" if argv[:1] == ["serve"] else "router"
            jobs.append((kind, argv[1:] if kind == "vllm" else argv))
            names.append(f"{' '.join(key)}: {kind}")
    jobs += [("vllm", ["/M", "--no-such-flag"]), ("router", ["--no-such-flag"])]
    errors = parse_all(jobs, tmp_path)
    rejected = {name: err for name, err in zip(names, errors) if err}
    assert not rejected, f"the pinned parsers reject: {rejected}"
    assert all(err and "--no-such-flag" in err for err in errors[-2:])  # the check can fail


# ---- what the settings promise against the scenario sets ----


def top_concurrency() -> int:
    """The most requests a scenario set keeps in flight: its top concurrency, or for an open-loop set
    (rates, no cap) all of its largest scenario's requests."""
    top = 0
    for path in (ROOT / "recipes" / "scenarios").glob("*.toml"):
        spec = tomllib.loads(path.read_text())
        for s in spec["scenario"]:
            s = spec | s  # top-level keys are every scenario's defaults
            if s.get("concurrency"):
                top = max(top, *s["concurrency"])
            elif s.get("dataset") not in ("mooncake", "burstgpt"):  # a trace's timing sets what is in flight
                top = max(top, s.get("num_prompts", 0))
    return top


def test_every_engine_holds_the_top_concurrency_in_its_batch_and_graphs(current):
    assert top_concurrency() >= 256
    closed_loop_top = max(tomllib.loads((ROOT / "recipes/scenarios/industry.toml").read_text())["concurrency"])
    for (*call, via), lines in current.items():
        for line in lines:
            _, argv = split(line)
            if argv[:1] != ["serve"] or "--headless" in argv:
                continue
            f = dict(flags(argv[2:]))
            dp = int(f.get("--data-parallel-size", 1))  # every rank, of both nodes too, holds its own batch
            where = f"{' '.join(call)} ({via})"
            assert int(f["--max-num-seqs"]) * dp >= top_concurrency(), where
            per_rank = -(-closed_loop_top // dp)
            step = (
                1 + json.loads(f.get("--speculative-config", '{"num_speculative_tokens": 0}'))["num_speculative_tokens"]
            )
            assert int(f["--max-cudagraph-capture-size"]) >= per_rank * step, where
            assert f["--stream-interval"] == "1" and f["--kv-cache-dtype"] == "auto", where
            if "--enable-expert-parallel" in f and "--data-parallel-size" in f:
                assert "--all2all-backend" in f, where


def test_every_current_recipe_names_its_reference_and_differences():
    text = (ROOT / "scripts" / "vllm.just").read_text()
    for name in {call[0] for call in CALLS}:
        head = text[: text.index(f"\n{name} ")]
        block = head[head.rstrip().rfind("\n\n") :]  # the comment block right above the recipe
        assert "# Reference:" in block and ("Differences:" in block or "differences" in block), name


# ---- refusals before anything starts ----


@pytest.mark.parametrize(
    "call, says",
    [
        (("vllm-serve-wide-ep-2node", "10.0.0.1", "2"), "0 (head) or 1"),
        (("vllm-serve-wide-ep-2node", "10.0.0.1", "0", "pplx"), "deepep_low_latency"),
        (("vllm-serve-pd-2node", "10.0.0.1", "10.0.0.2", "router"), "prefill or decode"),
    ],
)
def test_bad_node_arguments_are_refused(call, says):
    out = just(*call, env=render_env())
    assert out.returncode != 0 and says in out.stderr


def test_a_prefill_decode_layout_runs_the_guards_on_each_engine_and_starts_nothing_refused(tmp_path):
    moe = tmp_path / "moe"
    moe.mkdir()
    (moe / "config.json").write_text(json.dumps({"n_routed_experts": 256}))
    run_dir = tmp_path / "run"
    out = just("vllm-serve-pd", str(moe), "8000", "127.0.0.1", "--load-format", "dummy",
               env=render_env(PRINT="0", BENCH_RUN_DIR=str(run_dir)))  # fmt: skip
    assert out.returncode == 2 and out.stderr.count("refused: ") == 1, out.stderr
    assert "mixture-of-experts" in out.stderr and not run_dir.exists()


def test_a_prefill_decode_layout_without_its_engine_says_how_to_install_it(tmp_path):
    run_dir = tmp_path / "run"
    out = just(
        "vllm-serve-pd", str(tmp_path), env=render_env(PRINT="0", VLLM_VERSION="0.0.0", BENCH_RUN_DIR=str(run_dir))
    )
    assert out.returncode == 1 and "just vllm-install 0.0.0" in out.stderr
    assert not run_dir.exists()
