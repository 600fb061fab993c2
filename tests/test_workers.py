"""`bench run --workers N` against the calibration server: one schedule over several processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from bench.instrument import metrics
from bench.instrument.records import read_records
from bench.instrument.schedule import arrival_times
from bench.lab.calibration import read_log
from conftest import ROOT, bench_command, bench_process


def command(server, out: Path, *extra: str) -> list[str]:
    return bench_command(server, out, *extra)


def bench_run(server, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return bench_process(server, out, *extra)


def test_records_of_three_workers_merge_to_exactly_the_scheduled_requests(calibration, tmp_path):
    server = calibration(ttft_ms=5, itl_ms=5)
    out = tmp_path / "run"
    done = bench_run(
        server, out, "--workers", "3", "--concurrency", "5", "--num-prompts", "50", "--warmup", "7", "--output-len", "4"
    )
    assert done.returncode == 0, done.stderr
    assert "client: 3 worker processes (--workers)" in done.stderr
    lines = (out / "requests.jsonl").read_text().splitlines()
    ids = [json.loads(line)["id"] for line in lines]
    assert ids == list(range(57))  # none lost, none twice, in schedule order
    recs = list(read_records(out / "requests.jsonl"))
    assert all(r.ok for r in recs)
    assert [r.warmup for r in recs] == [True] * 7 + [False] * 50
    assert {r.worker for r in recs} == {0, 1, 2}
    # Dealt out in order: the k-th request of each phase to worker k mod 3.
    assert all(r.worker == (r.id if r.warmup else r.id - 7) % 3 for r in recs)
    # Every record is a request the server saw, once, and the server saw no other.
    served = {rid for rid in read_log(tmp_path / "server-0.jsonl") if rid.startswith("bench-")}
    assert len(served) == 57 and {int(rid.rsplit("-", 1)[1]) for rid in served} == set(range(57))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["workers"]["count"] == 3 and summary["workers"]["died"] == []
    assert not (out / "workers").exists()  # merged, then removed


def test_open_loop_over_two_workers_keeps_the_seeded_schedule(calibration, tmp_path):
    server = calibration(ttft_ms=5, itl_ms=5)
    out = tmp_path / "run"
    done = bench_run(
        server, out, "--workers", "2", "--rate", "40", "--burstiness", "0.5", "--num-prompts", "30", "--seed", "3"
    )
    assert done.returncode == 0, done.stderr
    recs = sorted(read_records(out / "requests.jsonl"), key=lambda r: r.id)
    planned = arrival_times(30, 40.0, 0.5, seed=3)
    start = recs[0].scheduled
    # Both workers start at one moment, so every arrival keeps its offset from the first.
    assert [r.scheduled - start for r in recs] == pytest.approx(planned, abs=1e-6)
    assert {r.worker for r in recs} == {0, 1}
    # Never sent before it was due (how late is this loaded host's business, not the test's).
    assert all(r.sent >= r.scheduled for r in recs)


def test_summary_of_two_workers_is_the_summary_of_their_merged_records(calibration, tmp_path):
    server = calibration(ttft_ms=5, itl_ms=2)
    out = tmp_path / "run"
    done = bench_run(
        server, out, "--workers", "2", "--concurrency", "4", "--num-prompts", "40", "--warmup", "2", "--output-len", "8"
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "summary.json").read_text())
    again = json.loads(json.dumps(metrics.summarise(read_records(out / "requests.jsonl"))))
    assert summary["completed"] == 40
    assert {k: summary[k] for k in again} == again
    assert summary["client_cpu_s"] > 0  # both workers' CPU, reported back to the parent
    assert 0 < summary["client_encode_cpu_s"] < summary["client_cpu_s"]  # their bodies, encoded before timing


def _workers(pid: int) -> list[int]:
    """The worker processes of the run `pid` (from /proc, no extra package): its children started
    by multiprocessing's spawn (not its resource tracker)."""
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if (
                int(stat.rsplit(")", 1)[1].split()[1]) == pid
                and b"spawn_main" in Path(f"/proc/{entry}/cmdline").read_bytes()
            ):
                kids.append(int(entry))
    return kids


def test_a_killed_worker_fails_the_run_and_its_finished_records_are_kept(calibration, tmp_path):
    server = calibration(ttft_ms=10, itl_ms=40)
    out = tmp_path / "run"
    cmd = command(server, out, "--workers", "2", "--concurrency", "4", "--num-prompts", "80", "--output-len", "6")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    files = [out / "workers" / f"requests-{i}.jsonl" for i in (0, 1)]
    deadline = time.monotonic() + 120
    while not all(f.exists() and len(f.read_text().splitlines()) >= 4 for f in files):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else "timeout"
        time.sleep(0.05)  # polling files for a condition, not timing the test
    workers = _workers(proc.pid)
    assert len(workers) == 2, workers
    victim = workers[0]
    os.kill(victim, signal.SIGKILL)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1, stderr
    summary = json.loads((out / "summary.json").read_text())
    died = summary["workers"]["died"]
    assert len(died) == 1 and died[0]["why"] == "killed by SIGKILL"
    assert summary["verdict"]["status"] == "failed"
    assert f"client worker {died[0]['worker']} killed by SIGKILL" in stderr
    recs = list(read_records(out / "requests.jsonl"))
    kept = [r for r in recs if r.worker == died[0]["worker"]]
    assert len(kept) == died[0]["records_kept"] >= 4 and all(r.ok for r in kept)
    assert len(recs) < 80  # the killed worker's unfinished requests are missing, not invented
    assert [r.id for r in recs] == sorted({r.id for r in recs})


def test_one_worker_until_one_core_would_be_too_busy_then_enough():
    from bench.instrument import spec, workers

    def chosen(*flags: str) -> tuple[int, str]:
        run = spec.parse(["--base-url", "http://127.0.0.1:1/v1", *flags])
        return workers.choose(run, 100_000)

    cores = len(os.sched_getaffinity(0))
    n, why = chosen("--concurrency", "1024")  # ~51,000 chunks/s: half a core
    assert n == 1 and why.startswith("default: ~51,200 chunks/s")
    n, why = chosen("--concurrency", "8192")  # ~410,000 chunks/s: about 7 cores
    assert n == min(7, cores) and f"({cores} cores here)" in why
    n, _ = chosen("--rate", "100", "--output-len", "128")  # open loop: 12,800 chunks/s
    assert n == 1
    assert chosen("--concurrency", "8192", "--workers", "3") == (3, "--workers")
    assert chosen("--concurrency", "2", "--workers", "3") == (2, "--workers (cut to 2: no more streams than that)")


def test_workers_of_a_killed_run_stop_and_bench_summarize_merges_their_records(calibration, tmp_path):
    from bench.cli import main

    server = calibration(ttft_ms=10, itl_ms=40)
    out = tmp_path / "run"
    cmd = command(server, out, "--workers", "2", "--concurrency", "4", "--num-prompts", "80", "--output-len", "6")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    files = [out / "workers" / f"requests-{i}.jsonl" for i in (0, 1)]
    deadline = time.monotonic() + 120
    while not all(f.exists() and len(f.read_text().splitlines()) >= 2 for f in files):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else "timeout"
        time.sleep(0.05)  # polling files for a condition, not timing the test
    workers = _workers(proc.pid)
    proc.kill()  # the parent dies before merging; its workers are told (SIGTERM) and stop
    proc.communicate(timeout=60)
    while any(Path(f"/proc/{pid}").exists() and "Z" not in _state(pid) for pid in workers):
        assert time.monotonic() < deadline, "a worker outlived its parent"
        time.sleep(0.05)  # polling for the workers' exit
    assert main(["summarize", str(out)]) == 0
    recs = list(read_records(out / "requests.jsonl"))
    assert {r.worker for r in recs} == {0, 1} and [r.id for r in recs] == sorted({r.id for r in recs})
    assert all(r.ok or r.error_kind == "interrupted" for r in recs)  # each worker wrote what it had in flight
    assert sum(r.ok for r in recs) >= 4 and len(recs) < 80
    summary = json.loads((out / "summary.json").read_text())
    assert summary["partial"] is True and summary["completed"] == sum(r.ok for r in recs)
    assert not (out / "workers").exists()


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"
