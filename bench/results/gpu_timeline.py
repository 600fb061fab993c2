"""The GPUs over a run, from its gpu.jsonl and requests.jsonl: power and SM clock per GPU, and the
client's output token rate, with the measured window shaded (`bench plot` draws it as
gpu-timeline.png beside server-timeline.png)."""

from __future__ import annotations

from pathlib import Path

from bench.instrument import metrics
from bench.instrument.energy import series

BIN_S = 1.0  # seconds per bar of the token rate


def gpu_timeline_series(lines: list[dict], records: list, t0: float) -> dict:
    """Seconds from the first GPU sample: per GPU power and SM clock, the client's output tokens
    per second in BIN_S bins (each chunk's tokens at its arrival), and the measured window.
    `t0`: the manifest's clock origin (records count from it, GPU samples are raw perf_counter)."""
    _, by_gpu = series(lines)
    times = [t for s in by_gpu.values() for t, _ in s]
    if not times:
        return {}
    first = min(times)
    gpus = {}
    for i, samples in sorted(by_gpu.items()):
        good = [(t, g) for t, g in samples if "error" not in g]
        gpus[i] = {
            "t": [t - first for t, _ in good],
            "power_w": [g.get("power_w") for _, g in good],
            "sm_clock_mhz": [g.get("sm_clock_mhz") for _, g in good],
        }
    bins: dict[int, int] = {}
    for r in records:
        if r.warmup:
            continue
        counts = r.chunk_tokens or [1] * len(r.chunk_times)
        for t, k in zip(r.chunk_times, counts):
            b = int((t0 + t - first) // BIN_S)
            bins[b] = bins.get(b, 0) + k
    span = metrics.window(records)
    return {
        "gpus": gpus,
        "rate_t": [(b + 0.5) * BIN_S for b in sorted(bins)],
        "rate": [bins[b] / BIN_S for b in sorted(bins)],
        "window": (t0 + span[0] - first, t0 + span[1] - first) if span else (None, None),
    }


def plot_gpu_timeline(lines: list[dict], records: list, t0: float, title: str, path: Path) -> bool:
    """Draw it; False when the run has too few GPU samples to draw."""
    import matplotlib.pyplot as plt

    s = gpu_timeline_series(lines, records, t0)
    if not s or max(len(g["t"]) for g in s["gpus"].values()) < 2:
        return False
    fig, (power, clock, rate) = plt.subplots(3, 1, figsize=(11, 9), sharex=True, constrained_layout=True)
    for i, g in s["gpus"].items():
        power.plot(g["t"], g["power_w"], label=f"GPU {i}", linewidth=1)
        clock.plot(g["t"], g["sm_clock_mhz"], label=f"GPU {i}", linewidth=1)
    power.set(ylabel="power (W)")
    clock.set(ylabel="SM clock (MHz)")
    rate.bar(s["rate_t"], s["rate"], width=BIN_S * 0.9, color="C2")
    rate.set(xlabel="seconds since the first GPU sample", ylabel=f"output tokens/s (client, {BIN_S:g} s bins)")
    if len(s["gpus"]) <= 8:
        power.legend(loc="upper right", fontsize=8)
    lo, hi = s["window"]
    for ax in (power, clock, rate):
        ax.grid(alpha=0.3)
        if lo is not None:
            ax.axvspan(lo, hi, color="grey", alpha=0.15)
    fig.suptitle(f"GPUs over time (grey: the measured window)\n{title}")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
