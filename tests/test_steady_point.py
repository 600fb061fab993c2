"""What a sweep reads a point by (the adaptive choice, points.md, `just sweep-bench`): its steady
state, not every request it sent."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench.instrument import metrics, steady
from bench.instrument.records import Record, RecordWriter
from bench.results.sweep import steady_point
from conftest import synthetic_record


def closed_loop(n_requests: int, streams: int, drain_itl: float) -> list[Record]:
    """A closed loop at ITL 9-11 ms while every slot is busy; the requests still running after the last
    send (the drain, at falling load) run at `drain_itl`."""
    free = [0.001 * i for i in range(streams)]
    sends = []
    for _ in range(n_requests):  # the schedule first, at full-load speed, to know where the drain starts
        slot = int(np.argmin(free))
        sends.append((slot, free[slot]))
        free[slot] += 0.02 + 31 * 0.010
    last_send = max(s for _, s in sends)
    out = []
    for i, (_, sent) in enumerate(sends):
        full = sent + 0.02 + 31 * 0.010 <= last_send
        itl = 0.010 * (0.9 + 0.2 * (i % 7) / 6) if full else drain_itl
        chunks = [sent + 0.02 + j * itl for j in range(32)]
        out.append(synthetic_record(i, sent, chunks))
    return out


def folder(tmp_path, records: list[Record], summary: dict):
    w = RecordWriter(tmp_path / "requests.jsonl")
    for r in records:
        w.write(r)
    w.close()
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    return tmp_path


def test_interactivity_is_taken_over_the_steady_window_not_the_drain(tmp_path):
    recs = closed_loop(48, streams=16, drain_itl=0.005)
    everyone = float(np.median([1 / metrics.tpot(r) for r in recs]))
    last_send = max(r.sent for r in recs)
    window = [1 / metrics.tpot(r) for r in sorted(recs, key=metrics.end) if metrics.end(r) <= last_send]
    assert 0 < len(window) < len(recs)
    tpot = steady.judge(recs, 0.02, 1)["intervals"]["mean_tpot"]  # less the start-up batches the rule cut
    window = window[len(window) * tpot["cut"] // (tpot["cut"] + tpot["batches"]) :]
    p = steady_point(folder(tmp_path, recs, {"output_throughput": 1.0}), 0.02, 16)
    assert p.interactivity == pytest.approx(float(np.median(window)))
    assert everyone > p.interactivity * 1.05  # the drain's fast requests would have read 5 % more interactive
    assert 0 < p.ci < 0.05 and p.throughput > 0


def test_a_point_too_short_for_batches_keeps_its_summary(tmp_path):
    recs = closed_loop(6, streams=1, drain_itl=0.010)
    summary = {"output_throughput": 321.0, "p50_interactivity_tok_s_user": 99.0}
    p = steady_point(folder(tmp_path, recs, summary), 0.02, 1)
    assert (p.load, p.throughput, p.interactivity, p.ci) == (1, 321.0, 99.0, 0.0)
