"""The calibration server on two processes sharing one port (--processes, SO_REUSEPORT)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.instrument.records import read_records
from bench.lab.calibration import read_log, send_lag_stats, start_server, stop_server
from bench.lab.calibration_fleet import log_files

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER = str(ROOT / "recipes" / "models" / "tiny-llama")


def test_two_server_processes_share_the_port_and_their_logs_merge(tmp_path):
    log = tmp_path / "calib.jsonl"
    (tmp_path / "calib.2.jsonl").write_text('{"id": "stale"}\n')  # left by a larger server before
    server = start_server(0, log=log, ttft_ms=5, itl_ms=5, processes=2)
    out = tmp_path / "run"
    try:
        cmd = [sys.executable, "-m", "bench", "run", "--base-url", f"{server.base_url}/v1", "--tokenizer", TOKENIZER]
        cmd += ["--concurrency", "16", "--num-prompts", "64", "--input-len", "16", "--output-len", "4"]
        cmd += ["--out", str(out), "--no-progress", "--scrape-interval", "0", "--workers", "2"]
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    finally:
        assert stop_server(server) == 0  # the first process stops the other, which writes its log
    assert done.returncode == 0, done.stderr
    assert log_files(log) == [log, tmp_path / "calib.1.jsonl"]
    per_process = [[json.loads(line)["id"] for line in f.read_text().splitlines()] for f in log_files(log)]
    assert all(ids for ids in per_process)  # the kernel dealt 16 connections to both
    entries = read_log(log)
    recs = list(read_records(out / "requests.jsonl"))
    assert {int(rid.rsplit("-", 1)[1]) for rid in entries if rid.startswith("bench-")} == {r.id for r in recs}
    assert sum(len(ids) for ids in per_process) == len(entries) == 65  # 64 and the length probe, each once
    assert send_lag_stats(log)["chunks"] == 64 * 4 + 1
