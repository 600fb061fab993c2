"""The server's side of a run over time, from its server.jsonl: running and waiting requests, KV
use and generated tokens per second, with the measured window shaded (`bench plot` draws it as
server-timeline.png beside the run's CDFs)."""

from __future__ import annotations

from pathlib import Path


def timeline_series(lines: list[dict]) -> dict:
    """Seconds from the first scrape, each role's level, the token rate, and the measured window."""
    scrapes = sorted((s for s in lines if s.get("kind") == "scrape"), key=lambda s: s["t"])
    if not scrapes:
        return {}
    t0 = scrapes[0]["t"]
    series: dict = {"t": [s["t"] - t0 for s in scrapes]}
    for role in ("running", "waiting", "kv_usage"):
        series[role] = [s.get("values", {}).get(role) for s in scrapes]
    gen = [s.get("values", {}).get("generation_tokens") for s in scrapes]
    series["tokens_per_s"] = [None] + [
        (b - a) / (tb - ta) if None not in (a, b) and tb > ta else None
        for a, b, ta, tb in zip(gen, gen[1:], series["t"], series["t"][1:])
    ]
    edges = {s["phase"]: s["t"] - t0 for s in scrapes if s.get("phase") in ("before", "after")}
    series["window"] = (edges.get("before"), edges.get("after"))
    return series


def plot_timeline(lines: list[dict], title: str, path: Path) -> bool:
    """Draw the timeline; False when the run has no scrapes to draw."""
    import matplotlib.pyplot as plt

    s = timeline_series(lines)
    if not s or len(s["t"]) < 2:
        return False
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 7), sharex=True, constrained_layout=True)
    for role, label in (("running", "running"), ("waiting", "waiting")):
        if any(v is not None for v in s[role]):
            top.plot(s["t"], s[role], label=f"requests {label}")
    if any(v is not None for v in s["kv_usage"]):
        kv = top.twinx()
        kv.plot(s["t"], s["kv_usage"], color="C3", linestyle=":", label="KV cache use")
        kv.set(ylabel="KV cache use (0-1)", ylim=(0, 1.05))
        kv.legend(loc="upper right")
    top.set(ylabel="requests")
    top.legend(loc="upper left")
    bottom.plot(s["t"], s["tokens_per_s"], color="C2")
    bottom.set(xlabel="seconds since the first scrape", ylabel="generated tokens/s (server)")
    lo, hi = s["window"]
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
        if lo is not None and hi is not None:
            ax.axvspan(lo, hi, color="grey", alpha=0.15, label="measured window")
    fig.suptitle(f"Server over time (grey: the measured window)\n{title}")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
