"""Per-turn latency of session runs (summary key `per_turn`, bench.instrument.session_metrics):
a table for `bench report` and a plot for `bench plot`. Later turns carry longer histories, so
their TTFT shows what the prefix cache saves (or, lost, costs)."""

from __future__ import annotations

from pathlib import Path

from bench.results.runfolder import Run


def session_runs(runs: list[Run]) -> list[Run]:
    return [r for r in runs if r.summary.get("per_turn")]


def _ms(v) -> str:
    return "-" if v is None else f"{v:,.1f}"


def table(runs: list[Run], fmt: str, md: bool) -> str:
    """One row per session run and turn: requests, prompt tokens, TTFT and E2EL; '' without sessions."""
    from tabulate import tabulate

    rows = []
    for r in session_runs(runs):
        hit = r.summary.get("theoretical_prefix_hit_rate")
        cache = next((c for c in r.summary.get("checks") or [] if c.get("check") == "prefix_cache"), None)
        served = f"{cache['figure']:.0%}" if cache and isinstance(cache.get("figure"), float) else "-"
        for t in r.summary["per_turn"]:
            rows.append(
                [r.scenario, r.load_point, r.engine, t["turn"], f"{t['completed']}/{t['requests']}"]
                + [_ms(t.get("mean_prompt_tokens")), _ms(t.get("p50_ttft_ms")), _ms(t.get("p99_ttft_ms"))]
                + [_ms(t.get("p50_e2el_ms")), "-" if hit is None else f"{hit:.0%}", served]
            )
    if not rows:
        return ""
    cols = ["Scenario", "Load", "Engine", "Turn", "Done", "Prompt tok", "TTFT p50 (ms)", "TTFT p99 (ms)"]
    cols += ["E2EL p50 (ms)", "Repeated", "Cache served"]
    head = "Per turn of the session runs (Repeated: share of prompt tokens the workload repeats; "
    head += "Cache served: the server's prefix-cache hit rate).\n"
    align = ("left",) * 3 + ("right",) * (len(cols) - 3)
    body = tabulate(rows, headers=cols, tablefmt="github" if md else fmt, disable_numparse=True, colalign=align)
    return head + body + "\n"


def plot(run: Run, path: Path) -> bool:
    """TTFT p50/p99 and mean prompt tokens per turn of one session run; False when it has no turns."""
    turns = run.summary.get("per_turn") or []
    if not turns:
        return False
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), constrained_layout=True)
    xs = [t["turn"] for t in turns]
    for key, name in (("p50_ttft_ms", "TTFT p50"), ("p99_ttft_ms", "TTFT p99"), ("p50_e2el_ms", "E2EL p50")):
        ys = [t.get(key) for t in turns]
        if any(y is not None for y in ys):
            ax.plot(xs, [float("nan") if y is None else y for y in ys], marker="o", label=name)
    ax.set(xlabel="Turn (0 = first of a conversation)", ylabel="ms", xticks=xs)
    ax.grid(alpha=0.3)
    tokens = ax.twinx()
    tokens.bar(xs, [t.get("mean_prompt_tokens") or 0 for t in turns], alpha=0.15, color="grey", label="prompt tokens")
    tokens.set_ylabel("Mean prompt tokens (bars)")
    ax.legend(loc="upper left")
    hit = run.summary.get("theoretical_prefix_hit_rate")
    repeated = "" if hit is None else f"; the workload repeats {hit:.0%} of prompt tokens"
    fig.suptitle(f"Latency per turn: engine {run.engine}, scenario {run.scenario}, load {run.load_point}{repeated}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
