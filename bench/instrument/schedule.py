"""When each request is due: arrival times for open-loop load, and a closed loop's ramp-up.

Closed loop (`--concurrency N` alone) has no arrival times: a request is due the moment a
slot frees (with `--ramp-up S`, the streams' first requests are spread over S seconds). Open
loop (`--rate R`) draws inter-arrival gaps from a gamma distribution with shape = burstiness
and mean 1/R: burstiness 1 is a Poisson process, below 1 burstier, above 1 more regular
(coefficient of variation of the gaps = 1/sqrt(burstiness)).
"""

from __future__ import annotations

import numpy as np


def arrival_times(n: int, rate: float, burstiness: float = 1.0, seed: int = 0) -> list[float]:
    """Offsets in seconds from the start of the measured phase for `n` requests."""
    if n <= 0:
        return []
    if rate == float("inf"):
        return [0.0] * n
    rng = np.random.default_rng(seed)
    theta = 1.0 / (rate * burstiness)  # gamma scale so that mean gap = shape * scale = 1/rate
    gaps = rng.gamma(shape=burstiness, scale=theta, size=n)
    gaps[0] = 0.0  # the first request goes at once, like every other client
    return np.cumsum(gaps).tolist()


def ramp_times(n: int, concurrency: int, seconds: float) -> list[float]:
    """Closed loop started over `seconds`: stream k's first request (k < concurrency) is due at
    k * seconds / concurrency, every later request the moment a stream frees (offset 0). All
    streams due at one instant measure how fast the client can send `concurrency` requests
    (~15 us each, so 15 ms for the last of 1,024) as much as the server."""
    step = seconds / concurrency
    return [k * step if k < concurrency else 0.0 for k in range(n)]


def load_point_name(concurrency: int | None, rate: float | None) -> str:
    """Folder name of a load point: c8, r2.5, or r2.5-c64 for a rate capped by concurrency."""
    if rate is None or rate == float("inf"):
        return f"c{concurrency}"
    r = f"r{rate:g}"
    return f"{r}-c{concurrency}" if concurrency else r
