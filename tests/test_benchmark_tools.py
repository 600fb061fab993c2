"""The benchmark commands' own machinery, at a small scale: what they count and print must come
from the runs they made (their figures are checked by running them, never here)."""

from __future__ import annotations

import ast
import json

import pytest

from bench.lab import clientscale, requestcost
from bench.results import sweepbench
from conftest import TOKENIZER


def test_requestcost_prints_the_client_beside_the_bare_loop(capsys):
    assert requestcost.main(["--requests", "300", "--concurrency", "8", "--runs", "2", "--floor"]) == 0
    out = capsys.readouterr()
    rows = [ast.literal_eval(line) for line in out.err.splitlines() if line.startswith("{'requests'")]
    assert [r["requests"] for r in rows] == [300, 300] and all(r["failed"] == 0 for r in rows)
    floors = [line for line in out.err.splitlines() if line.startswith("{'floor_us_per_request'")]
    assert len(floors) == 2
    assert "client CPU per request:" in out.out and "bare send-and-read loop (the floor):" in out.out
    assert out.out.count(", ") >= 3  # two runs each, and two ratios


SET = """
input_len = 16
output_len = 8
num_prompts = 8
prompts_per_concurrency = 8

[[scenario]]
name = "slow"
concurrency = [1, 2, 4, 8]
"""


@pytest.mark.slow
def test_sweepbench_counts_the_requests_each_sweep_sent(tmp_path, calibration, capsys):
    """TTFT 20 ms + 40 ms per other stream: ttft_p99 <= 120 ms holds at c3 (100 ms) and not at c4
    (140), so the grid's answer is c2..c4 whatever a loaded host adds, and the adaptive one lies
    within a grid step of it."""
    (tmp_path / "set.toml").write_text(SET)
    server = calibration(ttft_ms=20, itl_ms=2, ttft_per_stream_ms=40, itl_per_stream_ms=0.5)
    argv = ["--base-url", f"{server.base_url}/v1", "--set", str(tmp_path / "set.toml"), "--out", str(tmp_path / "sb")]
    argv += ["--slo", "ttft_p99=120,tpot_p99=40", f"--run-args=--tokenizer {TOKENIZER} --scrape-interval 0"]
    assert sweepbench.main(argv) == 0
    (row,) = json.loads((tmp_path / "sb" / "sweep-bench.json").read_text())
    for sweep in ("grid", "adaptive"):
        lines = sum(len(f.read_text().splitlines()) for f in (tmp_path / "sb" / sweep).rglob("requests.jsonl"))
        assert row["requests"][sweep] == lines, sweep
    assert row["requests"]["grid"] == 8 * (1 + 2 + 4 + 8)
    # Only c8 (64 requests) runs past what an adaptive point would stop with (50 + 8 sent): the
    # others have no early reading to compare with their whole.
    assert set(row["early_gap_by_grid_point"]) == {"c8"} and row["max_early_gap"] < 1
    assert row["requests_ratio"] == pytest.approx(row["requests"]["adaptive"] / row["requests"]["grid"])
    assert row["grid_points"] == 4 and row["adaptive_points"] >= 2
    assert row["slo_grid_range"] == [2, 4] and row["slo_within_one_grid_step"]
    assert set(row["deviation_by_grid_point"]) == {"c1", "c2", "c4", "c8"}
    assert "slow" in (tmp_path / "sb" / "sweep-bench.md").read_text()
    # The same comparison again from the folder alone, leaving its files as they were.
    written = (tmp_path / "sb" / "sweep-bench.json").read_text()
    capsys.readouterr()
    assert sweepbench.main(["--recompare", str(tmp_path / "sb")]) == 0
    printed = capsys.readouterr().out
    assert sweepbench.table(json.loads(written), "simple") in printed
    assert (tmp_path / "sb" / "sweep-bench.json").read_text() == written


def test_clientscale_writes_a_row_from_the_run_it_made(tmp_path, capsys):
    argv = ["--concurrency", "32", "--workers", "1", "--server-processes", "1", "--rounds", "2"]
    assert clientscale.main([*argv, "--ramp-up", "0.02", "--out", str(tmp_path)]) == 0
    (folder,) = tmp_path.glob("scale-*")
    rows = [line for line in (folder / "table.md").read_text().splitlines() if line.startswith("|  32 |")]
    assert len(rows) == 1, (folder / "table.md").read_text()
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    head = [c.strip() for c in (folder / "table.md").read_text().splitlines()[2].strip("|").split("|")]
    row = dict(zip(head, cells))
    assert row["failed"] == "0" and row["ramp-up ms"] == "20.00" and row["client"] == "this checkout"
    assert int(row["chunks >1 ms late"]) >= 0 and float(row["% of offered tok/s"]) > 0
    requests = sum(len(f.read_text().splitlines()) for f in folder.rglob("requests.jsonl"))
    assert requests == 64  # two rounds of 32 streams, every record written once


def test_clientscale_offers_what_the_schedule_asks_for():
    stream_s = (clientscale.TTFT_MS + (clientscale.OUTPUT_LEN - 1) * clientscale.ITL_MS) / 1e3
    assert clientscale.offered_throughput(1024, 2, 0.0) == pytest.approx(1024 * clientscale.OUTPUT_LEN / stream_s)
    # A 0.5 s ramp over 3 rounds: the last stream starts 0.5 x 1023/1024 s in and ends 3 streams later.
    span = 0.5 * 1023 / 1024 + 3 * stream_s
    assert clientscale.offered_throughput(1024, 3, 0.5) == pytest.approx(3 * 1024 * clientscale.OUTPUT_LEN / span)
