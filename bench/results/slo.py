"""SLO search: the highest load that meets every SLO, found by bracketing and bisection.

An SLO is `<metric>_<statistic>=<ms>`: metric ttft, tpot, itl or e2el, statistic p50, p90, p95,
p99 or mean (`--slo ttft_p99=500,tpot_p99=50`). A measured point meets it when the statistic,
computed from its records as the summary computes it, is at most the limit; each statistic also
gets a 95 % interval (a percentile's from the ranks a binomial count allows, a mean's from its
standard error), and a point whose interval holds the limit is marked `unsure`.

The search: bracket (double the load past the highest point that meets, or halve below the
lowest), then bisect between the highest load that meets and the lowest above it that misses,
until they are within `resolution` x the load of each other (a concurrency: at least 1 apart). The
answer is that range, the points that bound it, and the goodput at the lower one.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

from bench.errors import UserError
from bench.instrument import metrics

METRICS = {
    "ttft": lambda recs: [metrics.ttft(r) for r in recs],
    "tpot": lambda recs: [t for r in recs if (t := metrics.tpot(r)) is not None],
    "itl": lambda recs: [g for r in recs for g in metrics.chunk_gaps(r)],
    "e2el": lambda recs: [metrics.e2el(r) for r in recs],
}
STATS = {"p50": 50, "p90": 90, "p95": 95, "p99": 99, "mean": None}
_SLO = re.compile(r"(ttft|tpot|itl|e2el)_(p50|p90|p95|p99|mean)")


def parse(text: str) -> dict[str, float]:
    """'ttft_p99=500,tpot_p99=50' -> {'ttft_p99': 500.0, 'tpot_p99': 50.0} (ms)."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, eq, value = part.partition("=")
        try:
            limit = float(value)
        except ValueError:
            limit = -1.0
        if not eq or not _SLO.fullmatch(name) or not limit > 0:
            raise UserError(
                f"--slo {part!r} is not NAME=MS; give e.g. --slo ttft_p99=500,tpot_p99=50 (metric ttft, tpot, "
                "itl or e2el; statistic p50, p90, p95, p99 or mean; a limit in ms above 0)"
            )
        out[name] = limit
    if not out:
        raise UserError("--slo is empty; give e.g. --slo ttft_p99=500,tpot_p99=50")
    return out


def statistic(values: list[float], stat: str) -> tuple[float, float, float] | None:
    """(value, low, high) in ms: the statistic as the summary computes it, with its 95 % interval."""
    if not values:
        return None
    v = np.sort(np.asarray(values) * 1000)
    n = len(v)
    q = STATS[stat]
    if q is None:
        half = 1.96 * float(v.std(ddof=1)) / math.sqrt(n) if n > 1 else math.inf
        return float(v.mean()), float(v.mean()) - half, float(v.mean()) + half
    p = q / 100
    spread = 1.96 * math.sqrt(n * p * (1 - p))
    lo, hi = math.floor(n * p - spread) - 1, math.ceil(n * p + spread)  # 0-based ranks of the order statistics
    low = float(v[lo]) if lo >= 0 else -math.inf
    high = float(v[hi]) if hi < n else math.inf
    return float(np.percentile(v, q)), low, high


@dataclass
class Judged:
    load: float
    name: str
    meets: bool  # every SLO met by its measured statistic (a failed run meets none)
    unsure: list[str] = field(default_factory=list)  # SLOs whose interval holds the limit
    values: dict = field(default_factory=dict)  # SLO -> [value, low, high] in ms


def judge(load: float, name: str, records, slos: dict[str, float], failed: bool = False) -> Judged:
    timed = metrics.timed_requests(records)
    j = Judged(load, name, not failed)
    for slo, limit in slos.items():
        metric, stat = slo.split("_")
        got = statistic(METRICS[metric](timed), stat)
        if got is None:
            j.meets = False
            continue
        j.values[slo] = [round(x, 3) for x in got]
        j.meets &= got[0] <= limit
        if got[1] <= limit < got[2]:
            j.unsure.append(slo)
    return j


def next_load(judged: list[Judged], lowest: float, highest: float, integer: bool, resolution: float) -> float | None:
    """The next load to measure, or None once the answer is bracketed to one step (or out of range)."""
    meets = [j.load for j in judged if j.meets]
    misses = [j.load for j in judged if not j.meets]
    if not meets:  # halve below the lowest miss until one meets
        low = min(misses)
        nxt = math.floor(low / 2) if integer else low / 2
        return nxt if nxt >= lowest and nxt < low else None
    top = max(meets)
    above = [m for m in misses if m > top]
    if not above:  # double past the highest meet until one misses
        nxt = min(top * 2, highest)
        return nxt if nxt > top else None
    hi = min(above)
    if (integer and hi - top <= 1) or hi - top <= resolution * top:  # as narrow as it can be, or as asked
        return None
    mid = math.sqrt(top * hi)
    mid = round(mid) if integer else mid
    if integer and mid in (top, hi):
        mid = top + 1
    return mid


def answer(judged: list[Judged], slos: dict[str, float], integer: bool) -> dict:
    """The bracketed answer: the highest load that meets and the lowest above it that misses."""
    meets = [j for j in judged if j.meets]
    top = max(meets, key=lambda j: j.load) if meets else None
    above = [j for j in judged if not j.meets and (top is None or j.load > top.load)]
    hi = min(above, key=lambda j: j.load) if above else None
    return {
        "slo_ms": slos,
        "load": top.load if top else None,
        "range": [top.load if top else None, hi.load if hi else None],
        "bounded_by": {"meets": top.name if top else None, "misses": hi.name if hi else None},
        "unsure": sorted({u for j in (top, hi) if j for u in j.unsure}),
        "points": [j.__dict__ for j in sorted(judged, key=lambda j: j.load)],
        "integer": integer,
    }


def goodput(records, slos: dict[str, float]) -> float | None:
    """Requests/s that met every per-request limit the SLOs imply (ttft, tpot, e2el), as the summary defines it."""
    per_request = {slo.split("_")[0]: limit for slo, limit in slos.items() if slo.split("_")[0] != "itl"}
    if not per_request:
        return None
    return metrics.summarise(records, goodput_slo=per_request).get("request_goodput")
