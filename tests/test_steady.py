"""The steady-state stopping rule on synthetic load points, then `bench run --until-steady` on the
calibration server (closed and open loop): it stops early when steady, and the records stay complete."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench.cli import main as cli
from bench.instrument import steady
from bench.instrument.records import Record, read_records
from bench.lab.calibration import start_server, stop_server
from bench.paths import ROOT
from bench.serve.launcher import free_port
from conftest import synthetic_record

TOKENIZER = str(ROOT / "recipes" / "models" / "tiny-llama")  # the calibration model has none of its own


def closed_loop(n_requests: int, streams: int = 8, tokens: int = 32, drift: float = 0.0, seed: int = 0):
    """Records of a synthetic closed loop: `streams` slots, each request's ITL drawn around 10 ms,
    times (1 + drift x the time since the start in s): drift 0 is stationary."""
    rng = np.random.default_rng(seed)
    free = [0.001 * i for i in range(streams)]
    out = []
    for i in range(n_requests):
        slot = int(np.argmin(free))
        sent = free[slot]
        itl = 0.010 * rng.uniform(0.8, 1.2) * (1 + drift * sent)
        first = sent + 0.02
        chunks = [first + j * itl for j in range(tokens)]
        out.append(synthetic_record(i, sent, chunks))
        free[slot] = chunks[-1]
    return out


def first_steady(records: list[Record], closed: bool = True, target: float = 0.02, min_requests: int = 50):
    """(requests sent, the verdict) when the rule, judged as the runner judges, first says steady; None if never."""
    for n in range(min_requests, len(records) + 1, 10):
        sent, now = records[:n], records[n - 1].sent
        oldest = min(r.sent for r in sent if r.last > now)  # the oldest request in flight, as the runner finds it
        done = [r for r in sent if r.last <= now]
        if (verdict := steady.judge(done, target, min_requests, oldest, closed, whole_until=now))["steady"]:
            # Judged again once every request sent has ended, over the same window: the same answer.
            assert steady.judge(sent, target, min_requests, oldest, closed, whole_until=now) == verdict
            return n, verdict
    return None


def test_a_closed_loop_in_lockstep_counts_the_wave_that_just_ended():
    """Streams of equal length end together, and each sends its next request as it ends. Once the
    second wave has ended, the third is in flight and the window ends at its first send: every
    request sent before that has ended, so both waves count. Counted by end time (the judgement after
    a run, when the load drained after the last send), only the first wave and one request did."""
    c, length = 64, 0.02 + 47 * 0.01  # TTFT 20 ms, then 47 tokens 10 ms apart
    recs, sent = [], [s * 1e-4 for s in range(c)]
    for wave in range(2):
        for s in range(c):
            recs.append(synthetic_record(wave * c + s, sent[s], [sent[s] + 0.02 + j * 0.01 for j in range(48)]))
            sent[s] += length  # the stream's next request leaves as this one ends
    oldest, now = min(sent), max(r.last for r in recs)
    running = steady.judge(recs, 0.02, 1, end=oldest, whole_until=now)
    assert running["completed_in_window"] == 2 * c and running["whole_until_s"] == now
    assert steady.judge(recs, 0.02, 1, end=oldest)["completed_in_window"] == c + 1


@pytest.mark.parametrize("closed", [True, False])  # both estimators of the throughput
def test_a_stationary_point_stops_early(closed):
    records = closed_loop(2000)
    n, verdict = first_steady(records, closed)
    assert n < 600, n  # far below the cap of 2,000
    tput = verdict["intervals"]["output_throughput"]
    assert verdict["steady"] and tput["rel"] <= 0.02 and tput["drift"] == 0.0


@pytest.mark.parametrize("closed", [True, False])
def test_a_drifting_point_is_never_called_steady(closed):
    records = closed_loop(2000, drift=0.05)  # ITL grows 5 % a second: the point never settles
    assert first_steady(records, closed) is None
    verdict = steady.judge(records, 0.02, 50, closed=closed)
    assert not verdict["steady"] and "drifts" in verdict["why_not"]


def test_a_closed_loop_in_lockstep_is_steady_at_once():
    """Streams that start and end together send tokens in waves; the closed-loop estimator, per
    request, is not fooled by where a time slice cuts a wave."""
    records = closed_loop(400, streams=16, seed=2)
    for r in records:  # every request of a round shares its slot-mates' timing: one wave per round
        r.sent = r.scheduled = round(r.sent, 1)
    verdict = steady.judge(records, 0.02, 50, closed=True)
    assert verdict["intervals"]["output_throughput"]["rel"] < 0.02


def test_the_interval_of_white_noise_covers_its_mean():
    """Batch means of stationary noise: the 95 % interval holds the true mean in most of 200 draws."""
    rng = np.random.default_rng(1)
    hits = 0
    for _ in range(200):
        iv = steady.interval(rng.normal(100, 5, 10))
        hits += abs(iv.mean - 100) <= iv.half_width
    assert 180 <= hits <= 200


def test_a_trend_is_drift_and_noise_is_not():
    trend = np.linspace(100, 110, 10)
    iv = steady.interval(trend)  # a trend looks like a transient to MSER: it cuts half, the rest still drifts
    assert iv.cut == 5 and iv.drift == pytest.approx((trend[-1] - trend[5]) / trend[5:].mean())  # change / mean
    ramp = steady.interval([50, 100, 101, 99, 100, 101, 99, 100, 100, 101])  # a start-up batch, then steady
    assert ramp.cut == 1 and ramp.drift == 0.0 and ramp.mean == pytest.approx(901 / 9)
    assert steady.interval([100, 101, 99, 100, 101, 99, 100, 100, 101, 99]).drift == 0.0
    assert steady.interval([1.0, 2.0]) is None  # under 3 batches: no interval


@pytest.fixture
def calib(tmp_path):
    proc = start_server(free_port(), log=tmp_path / "calib.jsonl", ttft_ms=5, itl_ms=2)
    yield proc
    stop_server(proc)


@pytest.mark.parametrize("load", [["--concurrency", "8"], ["--rate", "200", "--concurrency", "16"]])
def test_bench_run_until_steady_stops_before_its_cap(calib, tmp_path, load):
    out = tmp_path / "run"
    argv = ["--base-url", f"{calib.base_url}/v1", "--tokenizer", TOKENIZER, *load, "--input-len", "32"]
    argv += ["--output-len", "16", "--until-steady", "--ci-target", "0.05", "--min-requests", "100"]
    argv += ["--max-requests", "5000", "--scrape-interval", "0", "--no-progress", "--out", str(out)]
    assert cli(["run", *argv]) == 0
    summary = json.loads((out / "summary.json").read_text())
    st = summary["steady"]
    assert st["stopped_by"] == "steady", st
    records = [r for r in read_records(out / "requests.jsonl") if not r.warmup]
    assert 100 <= len(records) < 5000
    assert all(r.ok and r.completion_tokens == 16 for r in records)  # every request sent ran to its end
    assert summary["completed"] == len(records)
    for name in ("output_throughput", "mean_tpot"):
        assert st["intervals"][name]["half_width"] > 0
    # A summary rebuilt from the records (as after kill -9) judges them by the same rule.
    assert cli(["summarize", str(out), "--force"]) == 0
    rebuilt = json.loads((out / "summary.json").read_text())["steady"]
    assert rebuilt["stopped_by"] == "interrupted" and rebuilt["intervals"]["mean_tpot"]["batches"] >= 5
