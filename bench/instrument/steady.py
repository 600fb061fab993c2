"""Steady-state stopping: has one load point been measured well enough to stop sending?

The rule is batch means. The measured window is cut into `BATCHES` batches; each gives one output
throughput and one mean TPOT. Neighbouring requests are correlated (they share the server's
batch), but means over batches of many requests are close to independent, so a Student-t interval
over the batch means holds where one over single requests would be far too narrow.

- Output throughput. Open loop, per batch of equal time: the tokens whose chunks arrived in it
  over its length. Closed loop, per batch of equal count (requests in the order they ended): the
  mean number of requests in flight over the window (Little's law) times the batch's tokens over
  the batch's summed request times. Time slices would not do for a closed loop: its streams start
  and end together (all C at once at the start, and again whenever lengths are equal), so the
  token rate runs in waves, and a slice's share of a wave, not the server, would set the interval.
- Mean TPOT, per batch of equal count: the requests in the order they ended.

A point is steady when it holds at least `min_requests` completed requests, both intervals are
within `target` x their mean (half-width), and neither series drifts: a least-squares trend over
the batches whose change across the window is both significant and larger than the target means
the point is still moving, however tight its interval. Leading batches of a start-up transient are
left out of both (MSER's cut, at most half of them); the summary says how many.

The window starts at the first generated token (the ramp before it is not the point's load) and
ends where every token before it is known: while running, the send of the oldest request still in
flight; afterwards, the last send (after it the load drains). The requests it counts are those sent
before its end that ended while the load was still whole: while running, every one sent before the
oldest still in flight (all have ended, by that very choice); afterwards, those that ended by the
last send. Chosen by send time, not by end time, while running: a closed loop's streams end
together, so "ended before the oldest send in flight" held one wave less (the wave that had just
ended, whose next requests are the ones in flight), and each point sent a wave more than it needed.
A cohort chosen by send time favours no length (every request sent before the end has ended),
where one chosen by end time leaves out the long requests sent just before the end.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from time import perf_counter

import numpy as np

from bench.instrument import metrics
from bench.instrument.records import Record

BATCHES = 10
# Student t, two-sided 95 %, by degrees of freedom (1..30); above 30 the normal's 1.96 is close enough.
_T95 = [12.71, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131]
_T95 += [2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def t95(df: int) -> float:
    return _T95[df - 1] if df <= len(_T95) else 1.96


@dataclass
class Interval:
    mean: float  # mean of the batch means
    half_width: float  # 95 % half-width
    rel: float  # half_width / mean
    drift: float  # relative change across the window of a significant trend, 0 when none
    batches: int  # batches the interval is over
    cut: int = 0  # leading batches left out as a start-up transient


def interval(values) -> Interval | None:
    """The 95 % interval of the mean of a series of batch means, and its drift; None under 3 batches.
    Leading batches that are a start-up transient (the first wave of a closed loop, a cold cache) are
    left out, as MSER does: the cut, at most half the batches, that gives the smallest standard error."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if len(v) < 3:
        return None
    cut = min(range(len(v) // 2 + 1), key=lambda d: (float(v[d:].var()) / (len(v) - d), d)) if len(v) >= 6 else 0
    v = v[cut:]
    k = len(v)
    if v.mean() == 0:
        return None
    mean = float(v.mean())
    half = t95(k - 1) * float(v.std(ddof=1)) / float(np.sqrt(k))
    return Interval(mean, half, abs(half / mean), _drift(v, mean), k, cut)


def _drift(v: np.ndarray, mean: float) -> float:
    """Least-squares trend over the batches: its change across the window relative to the mean,
    when the slope is significant at 95 %; 0 otherwise."""
    k = len(v)
    x = np.arange(k, dtype=float) - (k - 1) / 2
    slope = float((x * (v - mean)).sum() / (x * x).sum())
    resid = v - mean - slope * x
    se = np.sqrt(float((resid * resid).sum()) / (k - 2) / float((x * x).sum())) if k > 2 else np.inf
    significant = se == 0 and slope != 0 or se > 0 and abs(slope) / se > t95(k - 2)
    return abs(slope * (k - 1) / mean) if significant else 0.0


def verdict(series: dict[str, Interval | None], target: float) -> tuple[bool, str]:
    """(steady, why not) for named intervals against a relative half-width target."""
    for name, iv in series.items():
        if iv is None:
            return False, f"too few batches of {name} yet"
        if iv.drift > target:
            return False, f"{name} drifts by {iv.drift:.1%} across the window"
        if iv.rel > target:
            return False, f"{name} is known to +-{iv.rel:.1%}, the target is {target:.1%}"
    return True, ""


# ---- the two series, from records ----


def throughput_batches(records: list[Record], start: float, end: float, k: int = BATCHES) -> list[float]:
    """Output tokens per second in k equal slices of [start, end], by chunk arrival."""
    times, weights = [], []
    for r in records:
        n = len(r.chunk_times)
        if not n:
            continue
        times.append(r.chunk_times)
        if len(r.chunk_tokens) == n:
            weights.append(r.chunk_tokens)
        else:  # no per-chunk counts: the request's tokens spread evenly over its chunks
            weights.append([metrics.output_tokens(r) / n] * n)
    if not times or end <= start:
        return []
    counts, _ = np.histogram(np.concatenate(times), bins=k, range=(start, end), weights=np.concatenate(weights))
    return (counts / ((end - start) / k)).tolist()


def counted(r: Record, end: float, whole_until: float) -> bool:
    """Whether a finished request counts in a window ending at `end`: sent before it, and ended by
    `whole_until`, the moment the load stopped being whole (the module docstring says why)."""
    return r.sent < end and metrics.end(r) <= whole_until


def cycle_batches(records: list[Record], start: float, end: float, whole_until: float, k: int = BATCHES) -> list[float]:
    """Closed loop: output tokens per second in k equal-count batches of the requests counted in the
    window (`counted`), in end order, each as the mean requests in flight over [start, end] x its
    tokens over its requests' summed times (send to end). A failed request holds its slot and brings
    no tokens. Requests sent after `end` add nothing in flight."""
    if end <= start:
        return []
    in_flight = sum(max(0.0, min(metrics.end(r), end) - max(r.sent, start)) for r in records) / (end - start)
    ended = sorted(
        (metrics.end(r), metrics.output_tokens(r) if r.ok else 0, metrics.end(r) - r.sent)
        for r in records
        if counted(r, end, whole_until)
    )
    if len(ended) < k:
        return []
    parts = np.array_split(np.asarray(ended), k)
    return [in_flight * part[:, 1].sum() / part[:, 2].sum() for part in parts if part[:, 2].sum() > 0]


def tpots_in_window(records: list[Record], end: float, whole_until: float) -> list[tuple[float, float]]:
    """(end, TPOT) of the requests counted in the window that have a TPOT, in end order: the
    series the TPOT interval is over, and the frontier's interactivity with it."""
    return sorted(
        (metrics.end(r), t) for r in records if (t := metrics.tpot(r)) is not None and counted(r, end, whole_until)
    )


def tpot_batches(records: list[Record], end: float, whole_until: float, k: int = BATCHES) -> list[float]:
    """Mean TPOT (s) of k equal-count batches of the requests counted in the window, in end order."""
    ended = tpots_in_window(records, end, whole_until)
    if len(ended) < k:
        return []
    return [float(part.mean()) for part in np.array_split(np.asarray([t for _, t in ended]), k)]


def judge(
    records: list[Record],
    target: float,
    min_requests: int,
    end: float | None = None,
    closed: bool = True,
    whole_until: float | None = None,
) -> dict:
    """Steadiness of a load point's measured records over [first token, end] (default: the last send);
    `closed`: a closed loop (concurrency alone), else an open one (a rate); `whole_until`: until when
    the load was whole (default `end`; a running point's judgement: the moment it judged, when every
    request sent before `end` had ended)."""
    measured = [r for r in records if not r.warmup]
    recs = [r for r in measured if r.ok and r.first is not None]
    if end is None:
        end = max((r.sent for r in measured), default=0.0)
    until = end if whole_until is None else whole_until
    start = min((r.first for r in recs), default=end)
    tput = cycle_batches(measured, start, end, until) if closed else throughput_batches(recs, start, end)
    series = {
        "output_throughput": interval(tput),
        "mean_tpot": interval(tpot_batches(recs, end, until)),
    }
    done = sum(counted(r, end, until) for r in recs)
    steady, why = verdict(series, target)
    if steady and done < min_requests:
        steady, why = False, f"{done} requests completed in the window, fewer than the {min_requests} asked for"
    return {
        "steady": steady,
        "why_not": why or None,
        "ci_target": target,
        "loop": "closed" if closed else "open",
        "min_requests": min_requests,
        "window_s": [start, end],
        "whole_until_s": until,
        "completed_in_window": done,
        "intervals": {name: asdict(iv) if iv else None for name, iv in series.items()},
    }


class Watch:
    """Judges a running load point from the records so far; `done` once it is steady.

    The runner hands it each finished measured record and the oldest send still in flight. A
    judgement costs a few ms over thousands of records, so it runs at most every `every` seconds,
    spaced out further when it grows dear (it holds up the event loop)."""

    def __init__(self, target: float, min_requests: int, t0: float, closed: bool, every: float = 0.2):
        self.target, self.min_requests, self.t0, self.every = target, min_requests, t0, every
        self.closed = closed
        self.records: list[Record] = []
        self.done = False
        self.at: float | None = None  # when it was judged steady, from t0
        self.end: float | None = None  # the end of the window judged steady, from t0
        self.next_check = 0.0

    def seen(self, rec: Record) -> None:
        self.records.append(rec)

    def check(self, oldest_in_flight: float | None) -> bool:
        """Judge now if due; `oldest_in_flight` is the absolute send time of the oldest request in
        flight (None: none), every token before it is in the records."""
        now = perf_counter()
        if self.done or now < self.next_check or len(self.records) < self.min_requests:
            return self.done
        end = (oldest_in_flight if oldest_in_flight else now) - self.t0
        if judge(self.records, self.target, self.min_requests, end, self.closed, now - self.t0)["steady"]:
            self.done, self.at, self.end = True, now - self.t0, end
        cost = perf_counter() - now
        self.next_check = perf_counter() + max(self.every, 20 * cost)
        return self.done
