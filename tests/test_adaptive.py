"""Adaptive load points and the SLO bracket, on frontiers and verdicts written out by hand."""

from __future__ import annotations

import math

import pytest

from bench.errors import UserError
from bench.results import adaptive, slo
from bench.results.adaptive import FrontierPoint as P

GRID = [1, 2, 4, 8, 16, 32, 64]


def test_the_next_point_goes_to_the_grid_load_in_the_middle_of_the_largest_change():
    pts = [P(1, 100, 100), P(64, 2000, 20)]
    load, why = adaptive.next_load(pts, set(), 0.02, loads=GRID)
    assert load == 8  # the geometric middle of 1 and 64
    assert why.startswith("largest change between 1 and 64: throughput x20.00")


def test_a_saturated_stretch_gets_no_point():
    pts = [P(1, 100, 100), P(16, 1500, 60), P(64, 1510, 15)]  # 16 -> 64: throughput flat, latency up
    assert adaptive.settled_reason(pts[1], pts[2], 0.02, True, GRID) == "throughput saturated while latency rises"
    load, _ = adaptive.next_load(pts, set(), 0.02, loads=GRID)
    assert load == 4  # only the rising stretch is refined


def test_a_point_on_the_line_settles_both_sides():
    a, b = P(1, 100, 100), P(4, 400, 80)
    mid = P(2, 200, math.sqrt(100 * 80))  # on the straight line in log terms
    settled: set = set()
    assert "both sides settled" in adaptive.after([a, b], mid, settled, 0.02)
    assert adaptive.next_load([a, mid, b], settled, 0.02, loads=GRID) is None


def test_a_wide_interval_widens_the_tolerance():
    a, b = P(1, 100, 100, ci=0.3), P(4, 120, 110, ci=0.3)  # 20 % apart, each known to +-30 %
    assert "change by under 30.0%" in adaptive.settled_reason(a, b, 0.3, True, GRID)


def test_the_distance_to_a_frontier_reads_as_a_relative_change():
    line = [P(1, 100, 100), P(4, 400, 100)]
    assert adaptive.deviation(P(2, 200, 110), line) == pytest.approx(math.log(1.1))


def judged(meets: dict[int, bool]) -> list[slo.Judged]:
    return [slo.Judged(c, f"c{c}", ok) for c, ok in meets.items()]


def test_the_slo_bracket_doubles_halves_and_bisects():
    assert slo.next_load(judged({1: True, 4: True}), 1, 64, True, 0) == 8  # double past the highest that meets
    assert slo.next_load(judged({8: False}), 1, 64, True, 0) == 4  # halve below the lowest that misses
    assert slo.next_load(judged({16: True, 32: False}), 1, 64, True, 0) == 23  # geometric middle
    assert slo.next_load(judged({16: True, 17: False}), 1, 64, True, 0) is None  # one apart: found
    assert slo.next_load(judged({16: True, 19: False}), 1, 64, True, 0.25) is None  # as narrow as asked
    assert slo.next_load(judged({1: True, 64: True}), 1, 64, True, 0) is None  # all meet: the top is the answer
    ans = slo.answer(judged({8: True, 16: True, 17: False, 32: False}), {"ttft_p99": 100}, True)
    assert ans["range"] == [16, 17] and ans["bounded_by"] == {"meets": "c16", "misses": "c17"}


def test_a_percentile_interval_comes_from_the_ranks():
    value, low, high = slo.statistic([i / 1000 for i in range(1, 1001)], "p50")  # 1..1000 ms
    assert value == pytest.approx(500.5)
    assert 460 < low < 500 < high < 540  # about +-31 ranks of 1,000 at the median


@pytest.mark.parametrize("text", ["ttft=5", "ttft_p99", "ttft_p99=-1", "queue_p99=5", ""])
def test_a_malformed_slo_is_refused(text):
    with pytest.raises(UserError, match="--slo"):
        slo.parse(text)
