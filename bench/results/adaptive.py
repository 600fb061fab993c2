"""Adaptive load points: measure the throughput/interactivity frontier where it is least known.

It starts at the grid's lowest and highest load. Each next load goes between the two neighbours
whose throughput or interactivity differ most (in log terms, so a doubling counts the same
anywhere): the grid's load nearest their geometric mean, so that the grid sets the resolution a
user asked for and a point the grid would measure is measured at the same load (the SLO search
alone goes between grid loads). A stretch of the curve is settled, and gets no more points, when:
- a point placed in it lay within the tolerance of the line between its neighbours (adding
  points there changes the frontier by less than the target), or
- throughput no longer grows across it while interactivity falls (saturated: climbing further
  buys only latency), or
- both throughput and interactivity change by less than the tolerance across it, or
- no grid load lies between its ends.
The tolerance is the target (2 % by default) or the points' own throughput interval, whichever
is wider: a change the measurement cannot see is no reason for a point.

Distances are taken in log space, (log interactivity, log throughput), so they read as relative
changes; `deviation` is also what `just sweep-bench` uses to compare two frontiers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class FrontierPoint:
    load: float
    throughput: float  # output tok/s
    interactivity: float  # tok/s/user (median 1 / TPOT)
    ci: float = 0.0  # relative 95 % half-width of the throughput, 0 when unknown


def _xy(p: FrontierPoint) -> tuple[float, float]:
    return math.log(p.interactivity), math.log(p.throughput)


def _segment_distance(p, a, b) -> float:
    (px, py), (ax, ay), (bx, by) = p, a, b
    dx, dy = bx - ax, by - ay
    t = 0.0 if dx == dy == 0 else max(0.0, min(1.0, ((px - ax) * dx + (py - ay) * dy) / (dx * dx + dy * dy)))
    return math.hypot(px - ax - t * dx, py - ay - t * dy)


def deviation(p: FrontierPoint, line: list[FrontierPoint]) -> float:
    """Relative distance of a point from a frontier drawn through `line` (in load order)."""
    pts = [_xy(q) for q in line]
    if len(pts) == 1:
        return math.dist(_xy(p), pts[0])
    return min(_segment_distance(_xy(p), a, b) for a, b in zip(pts, pts[1:]))


def _change(a: FrontierPoint, b: FrontierPoint) -> float:
    return max(abs(math.log(b.throughput / a.throughput)), abs(math.log(b.interactivity / a.interactivity)))


def _between(a: FrontierPoint, b: FrontierPoint, loads: list[float] | None) -> list[float]:
    return [x for x in loads or [] if a.load < x < b.load]


def settled_reason(
    a: FrontierPoint, b: FrontierPoint, tol: float, integer: bool, loads: list[float] | None = None
) -> str | None:
    """Why no point goes between neighbours a and b, or None when one should. `loads`: the loads a
    point may take (the grid's), None for any."""
    if loads is not None and not _between(a, b, loads):
        return "no grid load between them"
    if integer and b.load - a.load <= 1:
        return "neighbouring loads"
    if b.throughput <= a.throughput * (1 + tol) and b.interactivity < a.interactivity:
        return "throughput saturated while latency rises"
    if _change(a, b) <= tol:
        return f"throughput and interactivity change by under {tol:.1%}"
    return None


def next_load(
    points: list[FrontierPoint],
    settled: set[tuple[float, float]],
    target: float,
    integer: bool = True,
    loads: list[float] | None = None,
) -> tuple[float, str] | None:
    """The next load to measure and why, or None when every stretch is settled. With `loads`, the
    point goes to the one of them nearest the middle (in log terms) of the stretch."""
    pts = sorted(points, key=lambda p: p.load)
    best = None
    for a, b in zip(pts, pts[1:]):
        tol = max(target, a.ci, b.ci)
        if (a.load, b.load) in settled or settled_reason(a, b, tol, integer, loads):
            continue
        if best is None or _change(a, b) > _change(*best):
            best = (a, b)
    if best is None:
        return None
    a, b = best
    mid = math.sqrt(a.load * b.load)
    if loads is not None:
        mid = min(_between(a, b, loads), key=lambda x: abs(math.log(x / mid)))
    elif integer:
        mid = min(max(round(mid), int(a.load) + 1), int(b.load) - 1)
    why = (
        f"largest change between {a.load:g} and {b.load:g}: throughput x{b.throughput / a.throughput:.2f}, "
        f"interactivity x{b.interactivity / a.interactivity:.2f}"
    )
    return mid, why


def after(points: list[FrontierPoint], new: FrontierPoint, settled: set, target: float) -> str:
    """Record what a new point taught: if it lay on the line between its neighbours, both halves
    are settled. Returns a sentence for the log."""
    below = max((p for p in points if p.load < new.load), key=lambda p: p.load, default=None)
    above = min((p for p in points if p.load > new.load), key=lambda p: p.load, default=None)
    if below is None or above is None:
        return "outside the measured range"
    off = deviation(new, [below, above])
    tol = max(target, below.ci, above.ci, new.ci)
    if off <= tol:
        settled.update({(below.load, new.load), (new.load, above.load)})
        return f"lay {off:.1%} off the line between its neighbours (tolerance {tol:.1%}): both sides settled"
    return f"lay {off:.1%} off the line between its neighbours (tolerance {tol:.1%}): refine further"


def why_settled(
    points: list[FrontierPoint], settled: set, target: float, integer: bool = True, loads: list[float] | None = None
) -> list[str]:
    """One line per stretch saying why it got no more points (for the log)."""
    pts = sorted(points, key=lambda p: p.load)
    out = []
    for a, b in zip(pts, pts[1:]):
        tol = max(target, a.ci, b.ci)
        why = settled_reason(a, b, tol, integer, loads) or (
            "a point inside lay on the line" if (a.load, b.load) in settled else ""
        )
        out.append(f"{a.load:g}..{b.load:g}: {why or 'open (point budget spent)'}")
    return out
