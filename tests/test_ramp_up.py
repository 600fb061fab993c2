"""`bench run --ramp-up S`: a closed loop whose streams start evenly over S seconds, and the
records of many streams ending together, written later in slices, none lost."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from bench.instrument.records import read_records
from bench.instrument.runner import WRITE_SLICE
from bench.instrument.schedule import ramp_times
from bench.lab.calibration import read_log
from conftest import bench_process


def bench_run(server, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return bench_process(server, out, "--output-len", "4", *extra)


def test_ramp_times_spread_only_the_first_request_of_each_stream():
    times = ramp_times(10, 4, 0.2)
    assert times == pytest.approx([0.0, 0.05, 0.1, 0.15, 0, 0, 0, 0, 0, 0])


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_ramped_closed_loop_starts_its_streams_on_schedule_and_then_runs_closed(calibration, tmp_path, workers):
    server = calibration(ttft_ms=5, itl_ms=5)
    out = tmp_path / "run"
    done = bench_run(server, out, "--concurrency", "8", "--num-prompts", "32", "--ramp-up", "0.4", "--workers", workers)
    assert done.returncode == 0, done.stderr
    recs = sorted(read_records(out / "requests.jsonl"), key=lambda r: r.id)
    assert [r.id for r in recs] == list(range(32)) and all(r.ok for r in recs)
    start = recs[0].scheduled
    # stream k's first request is due k * 50 ms after the start, and went out then, not before
    assert [r.scheduled - start for r in recs[:8]] == pytest.approx([k * 0.05 for k in range(8)], abs=1e-6)
    assert all(r.sent >= r.scheduled for r in recs)
    truth = read_log(tmp_path / "server-0.jsonl")
    received = {int(rid.rsplit("-", 1)[1]): e["received"] for rid, e in truth.items() if rid.startswith("bench-")}
    assert received[7] - received[0] > 0.3  # the server saw the streams begin over the ramp, not at once
    # every later request is due when a stream frees: at the end of an earlier one
    ends = {r.last for r in recs}
    assert all(r.scheduled in ends for r in recs[8:])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["load"]["ramp_up"] == 0.4


@pytest.mark.parametrize("load", [("--rate", "5", "--ramp-up", "1"), ("--concurrency", "2", "--ramp-up", "nan")])
def test_a_ramp_up_on_an_open_loop_or_of_no_finite_length_is_refused_in_one_sentence(calibration, tmp_path, load):
    server = calibration(ttft_ms=5, itl_ms=5)
    done = bench_run(server, tmp_path / "run", *load)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "bench run: --ramp-up takes a finite number of seconds >= 0 and applies to a closed loop (--concurrency "
        "without --rate, not sessions or traces): an open loop's arrivals are spread already"
    )
    assert not (tmp_path / "run" / "requests.jsonl").exists()


def test_records_of_a_burst_larger_than_a_write_slice_are_all_written_once(calibration, tmp_path):
    server = calibration(ttft_ms=20, itl_ms=2)
    c = 4 * WRITE_SLICE  # every stream ends within a few ms of the others, four slices' worth at once
    out = tmp_path / "run"
    done = bench_run(server, out, "--concurrency", str(c), "--num-prompts", str(3 * c), "--workers", "1")
    assert done.returncode == 0, done.stderr
    ids = [json.loads(line)["id"] for line in (out / "requests.jsonl").read_text().splitlines()]
    assert sorted(ids) == list(range(3 * c))  # none lost, none twice
    assert json.loads((out / "summary.json").read_text())["completed"] == 3 * c
