"""The fit check: each engine's limits read from hand-written commands and options files, the verdicts,
the refusal in `bench campaign` (and --allow-queueing) against the calibration server with a serve record,
and `just fit` on every serve recipe against the seed and industry sets."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from bench import paths
from bench.cli import main as bench
from bench.instrument import served
from bench.lab.calibration import start_server, stop_server
from bench.results import fitset
from bench.results.scenarios import Scenario, find_set, load_set, points
from bench.serve import fit, limits
from bench.serve.fit import FITS, QUEUES, REJECTED, Load
from bench.serve.options import read_yaml
from conftest import JUST, ROOT

TINY = ROOT / "recipes" / "models" / "tiny-llama"


def one(command: str, engine: str | None = None) -> limits.Server:
    fleet, _ = limits.servers(command, engine)
    assert len(fleet) == 1
    return fleet[0]


def options(tmp_path: Path, text: str) -> str:
    (tmp_path / "options.yaml").write_text(text)
    return str(tmp_path / "options.yaml")


# ---- each engine's limits, from its command line and options file ----


def test_vllm_defaults_are_the_pinned_h200_ones():
    s = one("/x/.venvs/vllm-0.32.0/bin/vllm serve /DeepSeek-R1 --trust-remote-code -tp 8 --no-enable-prefix-caching")
    assert (s.engine, s.role, s.running, s.step_tokens) == (
        "vllm",
        "both",
        (1024, "default --max-num-seqs"),
        (8192, "default --max-num-batched-tokens"),
    )
    assert s.chunked and s.graph == (512, "default --max-cudagraph-capture-size") and s.ranks == 1
    assert s.seq_len == (None, "unknown (the model's config.json)")


def test_vllm_explicit_flags_dp_and_mtp():
    s = one(
        "docker run --gpus all --entrypoint vllm vllm/vllm-openai:v0.32.0 serve /M --max-num-seqs 256 "
        "--max-model-len 32k --max-num-batched-tokens 16K --no-enable-chunked-prefill --data-parallel-size 8"
    )
    assert s.running == (2048, "--max-num-seqs x 8 ranks") and s.ranks == 8
    assert s.seq_len == (32000, "--max-model-len") and s.step_tokens == (16384, "--max-num-batched-tokens")
    assert not s.chunked and s.graph.value == 512  # min(2 x 256 seqs, 512 tokens)
    mtp = one('vllm serve /M -tp 8 --speculative-config \'{"method":"mtp","num_speculative_tokens":1}\'')
    assert mtp.graph.value == 256  # 512 tokens, 2 per request
    assert one("vllm serve /M --max-num-seqs 256 --max-num-active-seqs 64").running == (64, "--max-num-active-seqs")
    assert one("vllm serve /M --max-cudagraph-capture-size 64").graph == (64, "--max-cudagraph-capture-size")
    assert one("vllm serve /M --enforce-eager").graph == (None, "off")
    assert one("vllm serve /M --max-model-len auto").seq_len.value is None


def test_vllm_reads_its_config_file(tmp_path):
    path = options(tmp_path, "max-num-seqs: 32\nmax_model_len: 4096\n")
    s = one(f"vllm serve /M --config {path}")
    assert s.running == (32, "--max-num-seqs") and s.seq_len == (4096, "--max-model-len")
    assert one(f"vllm serve /M --max-num-seqs 64 --config {tmp_path / 'options.yaml'}").running.value == 64  # flag wins


def test_the_cpu_engine_gets_the_cpu_defaults_and_the_models_length():
    s = one(cpu_engine_command(), "vllm-cpu")
    assert s.running == (128, "default --max-num-seqs") and s.step_tokens.value == 2048
    assert s.graph == (None, "off") and s.seq_len == (16384, "the model's max_position_embeddings")
    demo = [fitset.load(p) for sc in load_set(find_set("demo")) for p in points(sc, Path("."))]
    assert {fit.judge([s], x).verdict for x in demo} == {FITS}  # what `just demo` measures, it holds


def test_sglang_limits_and_how_dp_attention_shares_them():
    s = one("python3 -m sglang.launch_server --model-path /M --tp-size 8 --disable-radix-cache")
    assert s.running == (None, "unknown (memory-derived)") and s.graph == (512, "default --cuda-graph-max-bs-decode")
    assert s.chunked and s.step_tokens == (8192, "default --chunked-prefill-size")
    dp = one("python3 -m sglang.launch_server --model-path /M --tp-size 8 --attn-dp-size 8 --max-running-requests 256")
    assert dp.running == (256, "--max-running-requests") and dp.ranks == 8  # shared, not multiplied
    old = one("python3 -m sglang.launch_server --model-path /M --tp 8 --enable-dp-attention --dp-size 8")
    assert old.ranks == 8 and old.running.value is None
    replicas = one("python3 -m sglang.launch_server --model-path /M --dp-size 2 --max-running-requests 100")
    assert replicas.running == (200, "--max-running-requests x 2 ranks")
    small = one(
        "python3 -m sglang.launch_server --model-path /M --tp-size 2 --context-length 4096 --chunked-prefill-size -1"
    )
    assert small.graph.value == 256 and small.seq_len == (4096, "--context-length") and not small.chunked
    bs = one("python3 -m sglang.launch_server --model-path /M --cuda-graph-bs-decode 1 2 4 96 --disable-radix-cache")
    assert bs.graph == (96, "--cuda-graph-bs-decode")


def test_sglang_speculative_decoding_caps_running_requests_at_48():
    mtp = "python3 -m sglang.launch_server --model-path /M --tp-size 8 --speculative-algorithm EAGLE"
    assert one(mtp).running.value == 48 and "--max-running-requests" in one(mtp).running.how
    assert one(mtp + " --max-running-requests 256").running == (256, "--max-running-requests")


def test_trtllm_defaults_and_the_options_file_winning(tmp_path):
    s = one("trtllm-serve /M --tp_size 8 --ep_size 8 --trust_remote_code")
    assert (s.running, s.step_tokens, s.chunked) == (
        (2048, "default --max_batch_size"),
        (8192, "default --max_num_tokens"),
        False,
    )
    assert s.graph == (128, "default cuda_graph_config.max_batch_size")
    path = options(
        tmp_path, "max_batch_size: 64\nenable_attention_dp: true\ncuda_graph_config:\n  batch_sizes: [1, 32]\n"
    )
    adp = one(f"mpirun -n 1 trtllm-serve /M --tp_size 8 --max_batch_size 16 --extra_llm_api_options {path}")
    assert adp.running == (512, "--max_batch_size x 8 ranks") and adp.ranks == 8  # the file's 64, per rank
    assert adp.graph == (32, "cuda_graph_config.batch_sizes")
    off = options(tmp_path, "cuda_graph_config: null\nenable_chunked_prefill: false\n")
    s = one(f"trtllm-serve /M --enable_chunked_prefill --config {off}")
    assert s.graph == (None, "off") and not s.chunked  # the file overrides the flag
    assert one("trtllm-serve /M --enable_chunked_prefill").chunked


def test_a_layout_counts_its_decode_servers_and_skips_its_front_door(tmp_path):
    sgl = "python3 -m sglang.launch_server --model-path /M --disaggregation-mode"
    record = "\n".join(
        [
            f"pd.prefill: {sgl} prefill --context-length 8192",
            f"pd.decode-0: {sgl} decode --max-running-requests 64",
            f"pd.decode-1: {sgl} decode --max-running-requests 64",
            "pd.router: python3 -m sglang_router.launch_router --pd-disaggregation --prefill http://h:1",
        ]
    )
    fleet, doors = limits.servers(record)
    assert [s.role for s in fleet] == ["prefill", "decode", "decode"] and doors == ["pd.router"]
    assert fit.judge(fleet, Load("s", "c128", 128, True, 1024, 2048)).verdict == FITS  # 64 + 64
    assert fit.judge(fleet, Load("s", "c256", 256, True, 1024, 2048)).verdict == QUEUES
    long = fit.judge(fleet, Load("s", "c1", 1, True, 8192, 9216))
    assert long.verdict == REJECTED and "pd.prefill" in long.why  # every server's length limit counts


def test_trtllm_disaggregated_config_describes_its_servers(tmp_path):
    cfg = tmp_path / "disagg.yaml"
    cfg.write_text(
        "hostname: localhost\nport: 8000\ncontext_servers:\n  num_instances: 1\n  max_num_tokens: 8192\n"
        "  urls:\n    - localhost:8001\ngeneration_servers:\n  num_instances: 2\n  max_batch_size: 128\n"
        "  enable_attention_dp: true\n  tensor_parallel_size: 4\n"
    )
    fleet, doors = limits.servers(f"trtllm-serve disaggregated -c {cfg}")
    assert doors == ["server"] and [s.role for s in fleet] == ["prefill", "decode"]
    assert fleet[1].running.value == 128 * 4 * 2 and fleet[1].ranks == 8


# ---- verdicts ----

TRT = "trtllm-serve /M --tp_size 8 --max_batch_size 50 --max_num_tokens 11000 --max_seq_len 2000"


@pytest.mark.parametrize(
    "load, verdict, words",
    [
        (Load("s", "c50", 50, True, 1000, 1900), FITS, ""),
        (Load("s", "c64", 64, True, 1000, 1900), QUEUES, "64 in flight, the server runs 50 (--max_batch_size)"),
        (Load("s", "r10", 5000, False, 1000, 1900), FITS, "open loop without a cap"),
        (Load("s", "c1", 1, True, 1000, 3000), REJECTED, "it cuts the output; raise --max_seq_len"),
        (Load("s", "c1", 1, True, 5000, 6000), REJECTED, "the request fails; raise --max_seq_len"),
    ],
)
def test_verdicts_name_the_flag(load, verdict, words):
    v = fit.judge(limits.servers(TRT)[0], load)
    assert v.verdict == verdict and words in "; ".join([v.why, *v.notes])


def test_a_prompt_over_a_step_is_rejected_only_where_the_engine_refuses_it():
    trt = fit.judge(limits.servers("trtllm-serve /M --max_num_tokens 4096")[0], Load("s", "c1", 1, True, 8192, 9000))
    assert trt.verdict == REJECTED and "--max_num_tokens" in trt.why and "--enable_chunked_prefill" in trt.why
    chunked = limits.servers("trtllm-serve /M --max_num_tokens 4096 --enable_chunked_prefill")[0]
    assert fit.judge(chunked, Load("s", "c1", 1, True, 8192, 9000)).verdict == FITS
    sgl = limits.servers("python3 -m sglang.launch_server --model-path /M --chunked-prefill-size -1")[0]
    assert fit.judge(sgl, Load("s", "c1", 1, True, 30000, 30100)).verdict == FITS  # SGLang admits it alone


def test_notes_for_cuda_graphs_and_unknown_limits_are_warnings():
    v = fit.judge(limits.servers("trtllm-serve /M")[0], Load("s", "c256", 256, True, 100, 200))
    assert v.verdict == FITS and "outside CUDA graphs" in v.notes[0]
    sgl = limits.servers("python3 -m sglang.launch_server --model-path /M")[0]
    loads = [Load("s", "c9", 9, True, 1, 2)]
    assert fit.judge(sgl, loads[0]).verdict == FITS
    assert fit.warnings(sgl, loads) == [
        "server: requests run at once unknown (memory-derived): 9 in flight not checked for queueing",
        "server: max sequence unknown (the model's config.json): requests of up to 2 tokens not checked",
    ]


def test_set_points_become_loads():
    random = Scenario("r", input_len=1000, output_len=100, range_ratio=0.1, concurrency=[8], rates=[2])
    closed, opened = (fitset.load(p) for p in points(random, Path(".")))
    assert (closed.in_flight, closed.capped, closed.max_input, closed.max_total) == (8, True, 1100, 1210)
    assert (opened.in_flight, opened.capped) == (100, False)  # no cap: all its prompts
    capped = Scenario("c", input_len=1, output_len=1, rates=[2], max_concurrency=16)
    assert fitset.load(points(capped, Path("."))[0])[2:4] == (16, True)
    sharegpt = Scenario("g", dataset="sharegpt", rates=[10], num_prompts=500)
    assert fitset.load(points(sharegpt, Path("."))[0])[2:] == (500, False, 1024, 2048, "")
    assert fitset.load(points(Scenario("j", dataset="jsonl", concurrency=[4]), Path("."))[0])[4:6] == (None, None)


def test_the_options_reader_agrees_with_pyyaml():
    for path in sorted((ROOT / "recipes" / "trt").glob("*.yaml")):
        assert read_yaml(path.read_text()) == yaml.safe_load(path.read_text()), path.name
    for text in ["a:\n  b:\n    - 1\n    - 2\n  c: [3, 4]\nd: null\n", "a:\n- 1\n- 2\nb: 0.5\n", "x: 'y'  # note\n"]:
        assert read_yaml(text) == yaml.safe_load(text)


def test_the_module_judges_one_load_and_exits_by_the_verdict(capsys):
    assert fit.main(["--concurrency", "50", "--input-len", "1000", "--output-len", "900", "--", *shlex.split(TRT)]) == 0
    assert fit.main(["--concurrency", "64", "--input-len", "1000", "--", TRT]) == 1
    assert "queues at the server" in capsys.readouterr().out
    assert fit.main(["--concurrency", "1", "--", "python", "-m", "some.router"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m bench.serve.fit: no vLLM, SGLang or TensorRT-LLM server") and err.count("\n") == 1


def test_the_set_command_takes_its_flags_on_either_side_of_the_set(capsys):
    assert fitset.main(["industry", "--recipe", "mine", "--", TRT]) == 1
    out = capsys.readouterr().out
    assert out.startswith("mine against industry.toml") and "| 1024-1024  | c64     | 64" in out
    assert fitset.main(["--recipe", "mine", "demo", "--", *shlex.split(TRT)]) == 1  # demo goes to c64
    assert capsys.readouterr().out.startswith("mine against demo.toml")
    assert fitset.main(["demo"]) == 2
    assert capsys.readouterr().err.endswith(
        "no serve command after --: give the one a recipe prints, `just PRINT=1 RECIPE`\n"
    )


def cpu_engine_command() -> str:
    """The command `just cpu-serve` records, read from scripts/cpu.just with its variables filled in."""
    body = (ROOT / "scripts" / "cpu.just").read_text().split("-- \\\n", 1)[1].split("\n\n", 1)[0]
    body = (
        body.replace("\\\n", " ")
        .replace("{{cpu_pin}}", "")
        .replace("{{cpu_python}}", "/v/bin/python")
        .replace("{{port}}", "8000")
    )
    return body.replace("{{cpu_model}}", str(TINY))


# ---- bench campaign refuses what the recorded serve command cannot hold ----

SET = """
num_prompts = 4
input_len = 16
output_len = 4

[[scenario]]
name = "short"
concurrency = [1, 4]
"""


@pytest.fixture
def recorded(tmp_path, monkeypatch):
    """The calibration server with a serve record saying it runs at most 2 requests of 64 tokens."""
    monkeypatch.setattr(paths, "RUN_DIR", tmp_path / "run")
    (tmp_path / "set.toml").write_text(SET)
    server = start_server(0, log=tmp_path / "server.jsonl", ttft_ms=1, itl_ms=1)
    command = "trtllm-serve /M --max_batch_size 2 --max_seq_len 64 --max_num_tokens 64"
    served.write(
        port=server.port,
        engine="trtllm",
        label="trt-calib",
        version="1",
        model=None,
        gpus=1,
        command=command,
        pid=server.pid,
    )
    yield {"url": f"{server.base_url}/v1", "tmp": tmp_path}
    stop_server(server)


def campaign(recorded, *extra: str) -> int:
    tmp = recorded["tmp"]
    tok = f"--run-args=--tokenizer {TINY}"
    return bench(
        [
            "campaign",
            str(tmp / "set.toml"),
            "--base-url",
            recorded["url"],
            "--results",
            str(tmp / "results"),
            "--pause",
            "0",
            tok,
            *extra,
        ]
    )


def test_campaign_refuses_a_point_that_would_queue_before_measuring_anything(recorded, capsys):
    assert campaign(recorded) == 2
    err = capsys.readouterr().err
    assert err.startswith("bench campaign: the recorded serve command cannot hold 1 planned point(s)")
    assert (
        "short c4 queues at the server (4 in flight" in err and "--max_batch_size" in err and "--allow-queueing" in err
    )
    assert err.count("\n") == 1 and not (recorded["tmp"] / "results").exists()


def test_allow_queueing_measures_it_on_purpose(recorded, capsys):
    assert campaign(recorded, "--allow-queueing") == 0
    assert "fit check against the recorded serve command: 1 fits, 1 queues at the server" in capsys.readouterr().out
    assert (recorded["tmp"] / "results" / "set" / "trt-calib" / "short" / "c4" / "summary.json").exists()


def test_a_rejected_point_is_refused_even_with_allow_queueing(recorded, capsys):
    (recorded["tmp"] / "set.toml").write_text(SET.replace("output_len = 4", "output_len = 60"))
    assert campaign(recorded, "--allow-queueing") == 2
    err = capsys.readouterr().err
    assert (
        "short c1, short c4 rejected (input + output 76 tokens, over 64 (--max_seq_len)" in err
        and "raise --max_seq_len" in err
    )


def test_the_dry_run_prints_every_verdict(recorded, capsys):
    assert campaign(recorded, "--dry-run", "--allow-queueing") == 0
    out = capsys.readouterr().out
    assert re.search(r"\| short +\| c1 .*\| fits ", out) and re.search(
        r"\| short +\| c4 .*\| queues at the server", out
    )


def test_no_record_no_check(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(paths, "RUN_DIR", tmp_path)
    assert bench(["campaign", "demo", "--label", "x", "--dry-run", "--base-url", "http://127.0.0.1:9/v1"]) == 0
    assert "no serve recipe recorded the server on port 9, so no fit check was possible" in capsys.readouterr().out


# ---- just fit on every serve recipe ----

SETS = {
    name: [fitset.load(p) for s in load_set(find_set(name)) for p in points(s, Path("."))]
    for name in ("seed", "industry")
}
ROW = re.compile(
    r"^\| (\S+) +\| (\S+) +\| ([\d,]+)(?: \(no cap\))? +\| ([\d,?]+)/([\d,?]+) +\| ([a-z ]+?)(?: \(skipped\))? +\|"
)


# Serve recipes are the public recipes of these groups that take a port; a recipe's required parameters get
# these values (text only: nothing is contacted; a two-node prefill/decode layout as its decode node runs it).
GROUPS = {"vllm", "sglang", "trt-llm", "repro 2025-04"}
NODE_ARGS = {"head": "10.0.0.1", "rank": "0", "worker": "10.0.0.2"}
NODE_ARGS |= {"prefill_node": "10.0.0.1", "decode_node": "10.0.0.2", "role": "decode"}
RENDER_ENV = {"MODEL": "/DeepSeek-R1", "PORT": "8000", "HOST": "127.0.0.1", "HOME": "/home/bench"}


def serve_recipes() -> list[tuple[str, list[str]]]:
    """(recipe, its required arguments) for every serve recipe."""
    dump = subprocess.run(
        [JUST, "--justfile", str(ROOT / "justfile"), "--dump", "--dump-format", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    out = []
    for name, r in sorted(json.loads(dump.stdout)["recipes"].items()):
        group = next((a["group"] for a in r["attributes"] if isinstance(a, dict) and "group" in a), None)
        params = r["parameters"]
        if r["private"] or group not in GROUPS or "port" not in [p["name"] for p in params]:
            continue
        required = [p["name"] for p in params if p["default"] is None and p["kind"] == "singular"]
        assert set(required) <= set(NODE_ARGS), f"{name} needs {required}: give them values in NODE_ARGS"
        out.append((name, [NODE_ARGS[p] for p in required]))
    return out


def render_env() -> dict:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_", "SGL_", "SGLANG_", "TRT_", "BENCH_"))}
    return {**keep, **RENDER_ENV}


@pytest.fixture(scope="module")
def fitted():
    def run(job):
        (recipe, args), scenarios = job
        cmd = [JUST, "--justfile", str(ROOT / "justfile"), "fit", recipe, scenarios, *args]
        return (recipe, scenarios), subprocess.run(
            cmd, cwd=ROOT, env=render_env(), capture_output=True, text=True, timeout=120
        )

    jobs = [(r, s) for r in serve_recipes() for s in SETS]
    with ThreadPoolExecutor(4) as pool:
        return dict(pool.map(run, jobs))


def verdict_rows(out: str) -> list[tuple]:
    """(scenario, point, in flight, capped, input, total, verdict, skipped) of each row of a verdicts table."""
    rows = []
    for line in out.splitlines():
        if m := ROW.match(line):
            scenario, point, flight, i, total, verdict = m.groups()
            lengths = [None if x == "?" else int(x.replace(",", "")) for x in (i, total)]
            rows.append(
                (
                    scenario,
                    point,
                    int(flight.replace(",", "")),
                    "(no cap)" not in line,
                    *lengths,
                    verdict,
                    "(skipped)" in line,
                )
            )
    return rows


def server_rows(out: str) -> list[list[str]]:
    """The cells of the limits table, one row per server."""
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("| server"))
    rows = []
    for line in lines[head + 2 :]:
        if not line.startswith("|"):
            return rows
        rows.append(line.split("|")[1:-1])
    return rows


def explicit_limits(out: str, column: int) -> list[int]:
    """The values a limits-table column shows as set by a flag or key (not a default, not unknown)."""
    cells = [row[column] for row in server_rows(out)]
    found = [re.match(r" ([\d,]+) \(((?:--)?[a-z_-]+)(?: x \d+ ranks)?\)[ ,]", c) for c in cells]
    return [int(m.group(1).replace(",", "")) for m in found if m]


def test_just_fit_judges_every_point_of_every_serve_recipe(fitted):
    assert len(fitted) >= 40
    for (recipe, scenarios), done in fitted.items():
        assert done.returncode in (0, 1), f"just fit {recipe} {scenarios}: {done.stderr}"
        rows = verdict_rows(done.stdout)
        assert [r[:2] for r in rows] == [(x.scenario, x.point) for x in SETS[scenarios]], recipe
        assert all(r[6] in (FITS, QUEUES, REJECTED) for r in rows), recipe
        assert done.returncode == (0 if all(r[6] == FITS for r in rows if not r[7]) else 1), recipe


def test_an_explicit_length_limit_rejects_longer_inputs_and_an_explicit_batch_queues(fitted):
    """Rules that hold whatever values the recipes carry, read off each output's own limits table."""
    checked = set()
    for (recipe, scenarios), done in fitted.items():
        seq, running = explicit_limits(done.stdout, 2), explicit_limits(done.stdout, 1)
        single = len(server_rows(done.stdout)) == 1
        for scenario, point, flight, capped, _, total, verdict, _ in verdict_rows(done.stdout):
            where = f"just fit {recipe} {scenarios}: {scenario} {point}"
            if seq and total is not None and total > min(seq):
                assert verdict == REJECTED, where
                checked.add(REJECTED)
            elif single and running and capped and flight > running[0]:
                assert verdict != FITS, where
                checked.add(QUEUES)
    assert checked == {REJECTED, QUEUES}, f"only {checked} exercised: no recipe sets a limit a point exceeds"
