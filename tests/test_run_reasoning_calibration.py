"""TTFO against the truth: the calibration server streams reasoning, then the answer, and logs
which chunk began the answer and when it went."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench.instrument import metrics
from bench.lab import accuracy
from bench.lab.calibration import read_log
from conftest import on_core
from test_run_calibration import bench_run, paired

REASONING, OUTPUT = 16, 24


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_ttfo_is_within_1ms_of_the_truth_at_concurrency_64_and_token_counts_are_exact(calibration, tmp_path, field):
    # The server spins to hit its due times: sharing a core with it would time the sharing.
    server = calibration(ttft_ms=30, itl_ms=20, cpu=0, reasoning_tokens=REASONING, reasoning_field=field)
    out, n = tmp_path / "run", 128
    with on_core(1):
        assert (
            bench_run(
                server,
                out,
                "--api",
                "chat",
                "--concurrency",
                "64",
                "--num-prompts",
                str(n),
                "--warmup",
                "4",
                "--input-len",
                "40",
                "--output-len",
                str(OUTPUT),
            )
            == 0
        )
    log_path = tmp_path / "server-0.jsonl"
    pairs, _ = paired(server, log_path, out)
    assert len(pairs) == n
    ttfo_err, together = [], 0
    for r, e in pairs:
        assert e["first_answer_chunk"] == REASONING  # one token per chunk
        assert (r.reasoning_tokens, r.reasoning_source, r.completion_tokens) == (REASONING, "server", OUTPUT)
        assert r.first_reasoning == r.first and r.first_answer == r.chunk_times[REASONING]
        # Chunks the client read in one go share the last one's arrival (the kernel's stamp of
        # that read): on this shared host a late server sends a backlog of chunks at once. The
        # truth of such a read is when its last chunk went; the summary counts the reads
        # (zero_gap_chunks). Read on its own, the answer chunk's truth is its own send.
        m = REASONING
        while m + 1 < len(r.chunk_times) and r.chunk_times[m + 1] - r.chunk_times[REASONING] < metrics.TOGETHER:
            m += 1
        together += m > REASONING
        ttfo_err.append((r.first_answer - r.sent) - (e["sent"][m] - e["received"]))
    assert abs(np.mean(ttfo_err)) < 1e-3, (
        f"TTFO mean error {np.mean(ttfo_err) * 1e3:.3f} ms (max {np.max(ttfo_err) * 1e3:.1f} ms; "
        f"{together} of {n} answer chunks read together with the next)"
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["zero_gap_chunks"] >= together
    assert summary["requests_with_reasoning"] == n and summary["requests_without_answer"] == 0
    assert (summary["total_reasoning_tokens"], summary["total_answer_tokens"]) == (
        REASONING * n,
        (OUTPUT - REASONING) * n,
    )
    assert summary["mean_ttfo_ms"] == pytest.approx(np.mean([r.first_answer - r.sent for r, _ in pairs]) * 1e3)
    # The lab's accuracy figures (self-check, bench-client) carry TTFO too.
    err = accuracy.errors(accuracy.latencies_from_run(out), accuracy.measured_requests(read_log(log_path)))
    assert "ttfo_mean_error_ms" in err and "ttfo_p99_error_ms" in err


def test_completions_split_at_inline_think_tags_with_a_tokenizer_that_has_them(calibration, tmp_path):
    server = calibration(ttft_ms=5, itl_ms=5, reasoning_tokens=5)
    out = tmp_path / "run"
    assert (
        bench_run(
            server,
            out,
            "--concurrency",
            "2",
            "--num-prompts",
            "4",
            "--input-len",
            "20",
            "--output-len",
            "8",
            "--extra-body",
            '{"calibration": {"tokens_per_chunk": 2}}',  # the answer begins inside chunk 2: " think</think> tok"
        )
        == 0
    )
    pairs, _ = paired(server, tmp_path / "server-0.jsonl", out)
    for r, e in pairs:
        assert e["first_answer_chunk"] == 2 and r.chunk_tokens == [2, 2, 2, 2]
        assert (r.first_reasoning, r.first_answer) == (r.chunk_times[0], r.chunk_times[2])
        assert r.reasoning_tokens == 5  # the server's figure; the chunks alone would say 4
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["workload"]["inline_think_tags"] is True


def test_report_and_plot_show_ttfo_beside_ttft_only_when_a_run_had_reasoning(calibration, tmp_path, capsys):
    from bench.cli import main
    from bench.results.plot import cdf_series
    from bench.results.runfolder import runs_under

    tree = tmp_path / "results"
    for label, reasoning in (("thinker", 6), ("plain", 0)):
        server = calibration(ttft_ms=5, itl_ms=5, reasoning_tokens=reasoning)
        out = tree / "camp" / label / "8-8" / "c2"
        load = ("--api", "chat", "--concurrency", "2", "--num-prompts", "4", "--input-len", "8", "--output-len", "8")
        assert bench_run(server, out, *load, "--label", label) == 0
    capsys.readouterr()
    assert main(["report", str(tree), "--baseline", "plain"]) == 0
    table = capsys.readouterr().out
    assert "TTFO p50 (ms)" in table and "TTFO p99 (ms)" in table
    assert table.index("TTFT p50 (ms)") < table.index("TTFO p50 (ms)") < table.index("TPOT p50 (ms)")
    runs = {r.engine: r for r in runs_under(tree)}
    assert runs["thinker"].summary["mean_ttfo_ms"] > runs["thinker"].summary["mean_ttft_ms"] + 25  # six 5 ms gaps
    assert runs["plain"].summary["mean_ttfo_ms"] == runs["plain"].summary["mean_ttft_ms"]
    assert (
        len(cdf_series(runs["thinker"].records())["ttfo_ms"]) == 4
        and not cdf_series(runs["plain"].records())["ttfo_ms"]
    )
    assert main(["plot", str(tree), "--out", str(tmp_path / "png")]) == 0
    assert (tmp_path / "png" / "camp" / "8-8-throughput-latency.png").stat().st_size > 0

    capsys.readouterr()
    assert main(["report", str(tree / "camp" / "plain")]) == 0
    assert "TTFO" not in capsys.readouterr().out  # no reasoning: TTFO is TTFT, no column of its own
