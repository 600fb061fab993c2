"""The run checks against the real CPU engine (vLLM exports /metrics): what the prefix cache served,
queueing at the server, preemptions, the token counters, and the engine's TTFT against the client's;
and against the calibration server, usage that disagrees with the server's own counter."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys

import pytest

from bench.cli import main
from bench.lab.calibration import start_server, stop_server
from conftest import ROOT, free_port, just, process_group_alive

TOKENIZER = str(ROOT / "recipes" / "models" / "tiny-llama")


# The engine on one core and the client on another, as `just sweep-bench` runs them: sharing both cores,
# the engine's processes starved the client on a loaded CI host (send lag p99 3.8 s at C=12), so it
# never had more in flight than the engine admits, and the queueing these tests look for never came.
CORES = sorted(os.sched_getaffinity(0))
PINNED = len(CORES) >= 2


def engine(*flags: str, env: dict[str, str] | None = None):
    port = free_port()
    pin = {"CPU_CORES": str(CORES[0])} if PINNED else {}
    started = just("cpu-serve", str(port), *flags, env=pin | (env or {}))
    assert started.returncode == 0, started.stderr
    pid = int((ROOT / ".run" / f"cpu-engine-{port}.pid").read_text())
    return port, pid


def stop(port: int, pid: int) -> None:
    assert just("cpu-stop", str(port)).returncode == 0
    assert not process_group_alive(pid)


@pytest.fixture(scope="module")
def cached():
    """The prefix cache on, and at most 4 requests running at once."""
    port, pid = engine("--enable-prefix-caching", "--max-num-seqs", "4")
    yield f"http://127.0.0.1:{port}/v1"
    stop(port, pid)


@contextlib.contextmanager
def on_client_core():
    """This process (the client, and the scraper it starts) on the core beside the engine's meanwhile."""
    before = os.sched_getaffinity(0)
    if PINNED:
        os.sched_setaffinity(0, {CORES[1]})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def checks(base_url: str, out, *flags: str) -> dict:
    argv = ["run", "--base-url", base_url, "--out", str(out), "--no-progress", "--scrape-interval", "0.2", *flags]
    with on_client_core():
        assert main(argv) in (0, 1)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scraper"]["scrapes"] >= 2 and summary["scraper"]["info"] is None
    return {c["check"]: c for c in summary["checks"]}


def test_unique_prompts_get_nothing_from_the_prefix_cache_and_the_counters_agree(cached, tmp_path):
    # About 2 s: 12 prompts (0.6 s) once let a loaded host's slow scrapes miss the window entirely.
    c = checks(
        cached, tmp_path / "r", "--concurrency", "2", "--num-prompts", "48", "--input-len", "256", "--output-len", "16"
    )
    assert c["prefix_cache"]["status"] == "pass" and c["prefix_cache"]["figure"] < 0.05
    assert c["tokens_prompt"]["status"] == "pass" and c["tokens_generated"]["status"] == "pass"
    assert c["queueing"]["status"] == "pass"  # 2 in flight, 4 admitted


def test_a_shared_half_of_each_prompt_is_served_by_the_cache(cached, tmp_path):
    c = checks(
        cached,
        tmp_path / "r",
        "--concurrency",
        "2",
        "--num-prompts",
        "12",
        "--input-len",
        "256",
        "--output-len",
        "16",
        "--prefix-len",
        "128",
    )
    assert c["prefix_cache"]["limit"] == 0.5 and 0.35 <= c["prefix_cache"]["figure"] <= 0.55
    assert c["prefix_cache"]["status"] == "pass"


@pytest.fixture(scope="module")
def small_batch():
    """At most 4 requests running at once, the prefix cache off as usual."""
    port, pid = engine("--max-num-seqs", "4")
    yield f"http://127.0.0.1:{port}/v1"
    stop(port, pid)


def test_more_in_flight_than_the_engine_admits_shows_as_queueing(small_batch, tmp_path):
    # Long enough (about 4 s) for several scrapes inside the window, however slow a loaded host scrapes.
    c = checks(
        small_batch,
        tmp_path / "r",
        "--concurrency",
        "12",
        "--num-prompts",
        "48",
        "--input-len",
        "64",
        "--output-len",
        "160",
    )
    assert c["queueing"]["status"] == "warn" and c["queueing"]["figure"] >= 1


@pytest.fixture(scope="module")
def pinned():
    """The engine on the first core, its OpenMP threads bound there too, and (below) the client on the
    second, as `just bench-client` runs them: sharing both cores, the engine's spinning thread starves
    its own HTTP front end, and the client's TTFT then holds ~16 ms the engine's histogram never sees
    (measured at C=1)."""
    port, pid = engine(env={"VLLM_CPU_OMP_THREADS_BIND": str(CORES[0])})
    yield f"http://127.0.0.1:{port}/v1"
    stop(port, pid)


@pytest.mark.parametrize("concurrency", [1, 16])
def test_the_engines_ttft_and_the_clients_agree_within_its_bucket(pinned, tmp_path, concurrency):
    out = tmp_path / "r"
    cmd = ["taskset", "-c", str(CORES[1]), sys.executable, "-m", "bench", "run", "--base-url", pinned]
    cmd += ["--out", str(out)]
    cmd += ["--no-progress", "--scrape-interval", "0.2", "--concurrency", str(concurrency)]
    cmd += ["--num-prompts", str(max(16, 3 * concurrency)), "--input-len", "128", "--output-len", "32"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    (agree,) = [c for c in json.loads((out / "summary.json").read_text())["checks"] if c["check"] == "ttft_agreement"]
    print(f"C={concurrency}: {agree['status']}: {agree['why']}")  # the figures the note quotes (pytest -s)
    assert agree["status"] == "pass", agree["why"]


def test_a_kv_cache_too_small_for_the_load_preempts(tmp_path):
    port, pid = engine("--num-gpu-blocks-override", "16", "--max-model-len", "1024", "--max-num-seqs", "16")
    try:
        c = checks(
            f"http://127.0.0.1:{port}/v1",
            tmp_path / "r",
            "--concurrency",
            "16",
            "--num-prompts",
            "64",  # ~4 s: at 32 (~2 s) a loaded CI host's scrapes inside the window all found it idle (peak 0)
            "--input-len",
            "128",
            "--output-len",
            "128",
        )
    finally:
        stop(port, pid)
    assert c["preemptions"]["status"] == "fail" and c["preemptions"]["figure"] > 0
    assert c["kv_cache"]["figure"] > 0.5


def test_usage_that_disagrees_with_the_servers_counter_is_flagged(tmp_path):
    server = start_server(0, log=tmp_path / "server.jsonl", ttft_ms=2, itl_ms=2, usage_scale=0.5)
    try:
        c = checks(
            f"{server.base_url}/v1",
            tmp_path / "r",
            "--tokenizer",
            TOKENIZER,
            "--concurrency",
            "2",
            "--num-prompts",
            "8",
            "--input-len",
            "16",
            "--output-len",
            "8",
        )
    finally:
        stop_server(server)
    assert c["tokens_generated"]["status"] == "fail" and "(+100.0%)" in c["tokens_generated"]["why"]
