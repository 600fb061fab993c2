"""bench run against the calibration server, whose own log is the truth."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from bench.cli import main
from bench.instrument.records import read_records
from bench.lab.calibration import read_log, stop_server
from conftest import ROOT, TOKENIZER, bench_command, on_core


def bench_run(server, out: Path, *extra: str) -> int:
    return main(
        [
            "run",
            "--base-url",
            f"{server.base_url}/v1",
            "--tokenizer",
            TOKENIZER,
            "--out",
            str(out),
            "--no-progress",
            *extra,
        ]
    )


def paired(server, log_path: Path, out: Path):
    stop_server(server)
    t0 = json.loads((out / "manifest.json").read_text())["clock"]["t0_perf_counter"]
    log = {rid.rsplit("-", 1)[1]: e for rid, e in read_log(log_path).items()}
    recs = [r for r in read_records(out / "requests.jsonl") if not r.warmup]
    return [(r, log[str(r.id)]) for r in recs], t0


@pytest.mark.parametrize("concurrency", [1, 32])
def test_latencies_agree_with_the_server_log_within_1ms(calibration, tmp_path, concurrency):
    # The server spins to hit its due times: sharing a core with it would time the sharing.
    server = calibration(ttft_ms=30, itl_ms=10, tokens_per_chunk=1, cpu=0)
    out = tmp_path / "run"
    n = 8 if concurrency == 1 else 64
    with on_core(1):
        assert (
            bench_run(
                server,
                out,
                "--concurrency",
                str(concurrency),
                "--num-prompts",
                str(n),
                "--warmup",
                "2",
                "--input-len",
                "40",
                "--output-len",
                "24",
            )
            == 0
        )
    pairs, t0 = paired(server, tmp_path / "server-0.jsonl", out)
    assert len(pairs) == n
    ttft_err, e2el_err, tpot_err, itl_err = [], [], [], []
    for r, e in pairs:
        assert r.completion_tokens == 24 and r.chunk_tokens == [1] * 24
        true_ttft = e["sent"][0] - e["received"]
        true_e2el = e["sent"][-1] - e["received"]
        ttft_err.append((r.first - r.sent) - true_ttft)
        e2el_err.append((r.last - r.sent) - true_e2el)
        tpot_err.append((r.last - r.first) / 23 - (e["sent"][-1] - e["sent"][0]) / 23)
        itl_err += list(np.diff(r.chunk_times) - np.diff(e["sent"]))
    for name, err in [("TTFT", ttft_err), ("E2EL", e2el_err), ("TPOT", tpot_err), ("ITL", itl_err)]:
        assert abs(np.mean(err)) < 1e-3, f"{name} mean error {np.mean(err) * 1e3:.3f} ms"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["completed"] == n  # the 2 warm-up requests are left out
    first_sent = min(r.sent for r, _ in pairs) + t0
    true_window = max(e["sent"][-1] for _, e in pairs) - first_sent
    assert summary["output_throughput"] == pytest.approx(24 * n / true_window, rel=0.01)


def test_multi_token_chunks_are_counted(calibration, tmp_path):
    server = calibration(ttft_ms=5, itl_ms=5, tokens_per_chunk=3)
    out = tmp_path / "run"
    assert (
        bench_run(server, out, "--concurrency", "2", "--num-prompts", "4", "--input-len", "20", "--output-len", "10")
        == 0
    )
    pairs, _ = paired(server, tmp_path / "server-0.jsonl", out)
    for r, e in pairs:
        assert r.chunk_tokens == e["tokens"] == [3, 3, 3, 1]
        assert r.completion_tokens == 10
    summary = json.loads((out / "summary.json").read_text())
    assert summary["multi_token_chunks"] == 3 * 4


def test_interrupted_run_keeps_records_and_writes_partial_summary(calibration, tmp_path):
    server = calibration(ttft_ms=10, itl_ms=50, tokens_per_chunk=1)
    out = tmp_path / "run"
    # the scraper on, at its default interval (bench_command turns it off): its stop is interrupted too
    flags = ["--scrape-interval", "1", "--concurrency", "4", "--num-prompts", "200", "--input-len", "20"]
    proc = subprocess.Popen(
        bench_command(server, out, *flags, "--output-len", "6"),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    records = out / "requests.jsonl"
    deadline = time.monotonic() + 60
    while not (records.exists() and len(records.read_text().splitlines()) >= 8):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else "timeout"
        time.sleep(0.05)  # polling a file for a condition, not timing the test
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    recs = list(read_records(records))
    finished = [r for r in recs if r.ok]
    assert len(finished) >= 8 and len(recs) < 200
    assert all(r.error_kind == "interrupted" for r in recs if not r.ok)
    assert len({r.id for r in recs}) == len(recs)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["partial"] is True and summary["completed"] == len(finished)
    assert json.loads((out / "manifest.json").read_text())["partial"] is True


def test_self_check_records_the_client_error_bar(calibration, tmp_path):
    server = calibration(ttft_ms=5, itl_ms=5)
    out = tmp_path / "run"
    assert (
        bench_run(
            server,
            out,
            "--concurrency",
            "4",
            "--num-prompts",
            "4",
            "--input-len",
            "20",
            "--output-len",
            "4",
            "--self-check",
        )
        == 0
    )
    check = json.loads((out / "manifest.json").read_text())["self_check"]
    assert check["ok"] and check["concurrency"] == 4 and check["requests"] == 8
    assert abs(check["ttft_mean_error_ms"]) < 5 and abs(check["itl_p99_error_ms"]) < 5
    assert check["server_send_lag"]["chunks"] == 8 * 32 + 1  # and the one token of the length probe


def test_duration_ends_a_closed_loop_before_its_prompts_run_out(calibration, tmp_path):
    server = calibration(ttft_ms=5, itl_ms=10)
    out = tmp_path / "run"
    assert (
        bench_run(
            server,
            out,
            "--concurrency",
            "2",
            "--num-prompts",
            "1000",
            "--duration",
            "1",
            "--input-len",
            "20",
            "--output-len",
            "10",
        )
        == 0
    )
    recs = list(read_records(out / "requests.jsonl"))
    # each request takes ~0.1 s, two at a time: about 20 fit in one second, never 1000
    assert 4 <= len(recs) <= 60 and all(r.ok for r in recs)
    assert max(r.sent for r in recs) - min(r.sent for r in recs) <= 1.0


def test_open_loop_sends_on_the_seeded_schedule(calibration, tmp_path):
    from bench.instrument.schedule import arrival_times

    server = calibration(ttft_ms=5, itl_ms=5)
    out = tmp_path / "run"
    assert (
        bench_run(
            server,
            out,
            "--rate",
            "40",
            "--burstiness",
            "0.5",
            "--num-prompts",
            "30",
            "--seed",
            "3",
            "--input-len",
            "20",
            "--output-len",
            "4",
        )
        == 0
    )
    recs = sorted(read_records(out / "requests.jsonl"), key=lambda r: r.id)
    planned = arrival_times(30, 40.0, 0.5, seed=3)
    start = recs[0].scheduled
    assert [r.scheduled - start for r in recs] == pytest.approx(planned, abs=1e-6)
    lags = [r.sent - r.scheduled for r in recs]
    assert max(lags) < 0.02, f"the client fell {max(lags) * 1e3:.1f} ms behind its schedule"
