"""Multi-turn sessions on the real CPU engine with its prefix cache on: the share of prompt tokens
the server says its cache served is about the share the workload repeats; with the history
re-tokenised every turn (a deliberate fault) it drops, and the prefix_cache check fails."""

from __future__ import annotations

import json

import pytest

from bench.cli import main
from conftest import ROOT, free_port, just, process_group_alive

TOKENIZER = str(ROOT / "recipes" / "models" / "tiny-llama")


@pytest.fixture(scope="module")
def cached():
    """Prefix cache on, in blocks of 32 tokens, the smallest the CPU attention takes (its default of
    128 would round a short turn's reusable prefix down by up to 127 tokens)."""
    port = free_port()
    started = just("cpu-serve", str(port), "--enable-prefix-caching", "--block-size", "32", "--max-num-seqs", "4")
    assert started.returncode == 0, started.stderr
    pid = int((ROOT / ".run" / f"cpu-engine-{port}.pid").read_text())
    yield f"http://127.0.0.1:{port}/v1"
    assert just("cpu-stop", str(port)).returncode == 0
    assert not process_group_alive(pid)


def sessions_run(base_url: str, out, *flags: str) -> dict:
    argv = ["run", "--base-url", base_url, "--out", str(out), "--no-progress", "--scrape-interval", "0.5"]
    argv += ["--api", "chat", "--dataset", "sessions", "--concurrency", "2", "--num-prompts", "4", "--turns", "3"]
    argv += ["--input-len", "64", "--output-len", "24", *flags]
    assert main(argv) in (0, 1)
    return json.loads((out / "summary.json").read_text())


@pytest.mark.slow
def test_the_cache_serves_what_the_sessions_repeat_and_a_broken_history_is_flagged(cached, tmp_path):
    good = sessions_run(cached, tmp_path / "good")
    assert good["completed"] == 12 and good["conversations"] == 4 and good["sessions_cut_short"] == 0
    check = {c["check"]: c for c in good["checks"]}["prefix_cache"]
    expected = good["theoretical_prefix_hit_rate"]
    assert 0.3 < expected < 0.7
    # Measured close to the theory: whole 32-token blocks only (a little less); the previous answers'
    # own blocks, when their text re-tokenises to the tokens generated (more, by at most the answers'
    # share of the prompts, 48 of ~390 tokens a conversation).
    print("sessions, prefix cache:", check["why"])
    assert check["status"] == "pass" and expected - 0.1 < check["figure"] < expected + 0.15, check["why"]
    assert [t["turn"] for t in good["per_turn"]] == [0, 1, 2]

    broken = sessions_run(cached, tmp_path / "broken", "--session-fault", "retokenize", "--seed", "1")
    check = {c["check"]: c for c in broken["checks"]}["prefix_cache"]
    print("sessions with the history re-tokenised, prefix cache:", check["why"])
    assert broken["completed"] == 12
    assert broken["theoretical_prefix_hit_rate"] > 0.3  # the workload still claims its reuse ...
    assert check["figure"] < 0.15 and check["status"] == "fail", check["why"]  # ... the server found none
    assert "history altered" in check["why"]
    manifest = json.loads((tmp_path / "broken" / "manifest.json").read_text())
    assert manifest["workload"]["session_fault"] == "retokenize"


@pytest.mark.slow
def test_a_mooncake_trace_gets_its_shared_blocks_from_the_cache(cached, tmp_path):
    out = tmp_path / "trace"
    trace = ROOT / "tests" / "data" / "mooncake-small.jsonl"
    argv = ["run", "--base-url", cached, "--out", str(out), "--no-progress", "--scrape-interval", "0.5"]
    assert main(argv + ["--dataset", "mooncake", "--dataset-path", str(trace), "--num-prompts", "24"]) in (0, 1)
    summary = json.loads((out / "summary.json").read_text())
    expected = json.loads((out / "manifest.json").read_text())["workload"]["theoretical_prefix_hit_rate"]
    check = {c["check"]: c for c in summary["checks"]}["prefix_cache"]
    print("mooncake trace, prefix cache:", check["why"])
    assert summary["completed"] == 24 and summary["input_len_mismatches"] == 0
    # The server's own counter: the blocks the trace shares by hash id are shared token for token.
    assert check["status"] == "pass" and abs(check["figure"] - expected) < 0.1, check["why"]
