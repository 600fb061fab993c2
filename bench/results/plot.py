"""`bench plot`: PNG figures next to the run folders, read from the files alone.

Per campaign and scenario: output throughput against TTFT/TPOT p50/p99, one line per engine with
points labelled by load point; throughput per GPU against interactivity (tok/s/user), with each
engine's Pareto frontier drawn as a line (InferenceX's view), and beside it output tokens per
joule when the runs sampled their GPUs. Per run with requests.jsonl: the CDFs of TTFT and ITL,
and with gpu.jsonl the GPUs' power and SM clock over time (gpu-timeline.png). The `*_series`
functions return exactly what is drawn.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

from bench.instrument import metrics
from bench.instrument.checks import read_server
from bench.instrument.gpu_sampler import read_lines
from bench.results import slo_report, turns
from bench.results.gpu_timeline import plot_gpu_timeline
from bench.results.report import context, load_key, scenario_key, value
from bench.results.runfolder import MARKS, Run, runs_under
from bench.results.timeline import plot_timeline

TITLE_WIDTH = 95  # characters of a title line that fit the narrowest plot (11 inches at 12 pt)
LATENCY_PANELS = [
    ("ttft_p50", "TTFT p50 (ms)"),
    ("ttft_p99", "TTFT p99 (ms)"),
    ("tpot_p50", "TPOT p50 (ms)"),
    ("tpot_p99", "TPOT p99 (ms)"),
]


def add_arguments(p) -> None:
    p.add_argument("tree", metavar="RESULTS_TREE", help="Folder searched for run folders.")
    p.add_argument("--out", metavar="DIR", help="Write the PNGs under DIR (same layout) instead of next to the data.")
    p.add_argument(
        "--include-flagged",
        action="store_true",
        help="Let failed, partial and lossy runs (marked on the plots) count for the Pareto frontier too.",
    )


def point(run: Run) -> dict:
    """The numbers of one run that the scenario plots use."""
    s, gpus = run.summary, run.manifest.get("gpu_count")
    mark = (run.flag or ("",))[0]
    p = {
        "load_point": f"{run.load_point} {mark}".strip(),
        "flag": mark,
        "output_throughput": value(s, "output_throughput"),
    }
    p.update({m: value(s, m) for m, _ in LATENCY_PANELS})
    p["reasoning"] = bool(s.get("requests_with_reasoning"))  # then TTFO is drawn beside TTFT
    p.update({m: value(s, m) for m in ("ttfo_p50", "ttfo_p99")})
    tpot = value(s, "tpot_p50")  # summary-only imports have no interactivity distribution
    p["interactivity"] = value(s, "interactivity_p50") or (1000 / tpot if tpot else None)
    per_gpu = value(s, "output_throughput_per_gpu")
    if per_gpu is None and gpus and p["output_throughput"] is not None:
        per_gpu = p["output_throughput"] / gpus
    p["throughput_per_gpu"] = per_gpu
    p["tokens_per_joule"] = value(s, "output_tokens_per_joule")  # None unless the run sampled its GPUs
    ci = (((s.get("steady") or {}).get("intervals") or {}).get("output_throughput") or {}).get("rel")
    p["throughput_ci"] = ci  # relative 95 % half-width (runs measured until steady), else None
    p["folder"] = str(run.path)
    return p


def scenario_series(runs: list[Run]) -> dict[tuple[str, str], dict[str, list[dict]]]:
    """(campaign, scenario) -> engine -> points in load order."""
    out: dict[tuple[str, str], dict[str, list[dict]]] = {}
    for r in sorted(runs, key=lambda r: (r.campaign, scenario_key(r.scenario), r.engine, load_key(r.load_point))):
        out.setdefault((r.campaign, r.scenario), {}).setdefault(r.engine, []).append(point(r))
    return out


def pareto(points: list[dict], x: str = "interactivity", y: str = "throughput_per_gpu") -> list[dict]:
    """Points no other point beats on both axes, by increasing x."""
    pts = sorted((p for p in points if p[x] is not None and p[y] is not None), key=lambda p: (-p[x], -p[y]))
    front, best = [], float("-inf")
    for p in pts:
        if p[y] > best:
            front.append(p)
            best = p[y]
    return front[::-1]


def frontier(points: list[dict], y: str, include_flagged: bool = False) -> list[dict]:
    """The Pareto frontier of an engine's points; flagged runs (failed, partial, lossy) stay off it
    unless asked, so a run that lost requests cannot set the line."""
    return pareto([p for p in points if include_flagged or not p["flag"]], y=y)


def cdf_series(records) -> dict[str, list[float]]:
    """Sorted per-request TTFTs and pooled ITLs in ms (the CDF's y is rank / count), as metrics defines them."""
    recs = metrics.timed_requests(records)
    itl = [g * 1000 for r in recs for g in metrics.chunk_gaps(r)]
    ttfo = [t * 1000 for t in map(metrics.ttfo, recs) if t is not None]
    reasoned = any(r.first_reasoning is not None for r in recs)  # else TTFO is TTFT
    out = {"ttft_ms": sorted(metrics.ttft(r) * 1000 for r in recs), "itl_ms": sorted(itl)}
    return out | {"ttfo_ms": sorted(ttfo) if reasoned else []}


def _title(runs: list[Run], what: str) -> str:
    # The context line wrapped: a long campaign name, model and CPU ran past a plot's edges.
    return f"{what}\n" + textwrap.fill(f"{runs[0].campaign}: {context(runs)}", TITLE_WIDTH)


def _label_points(ax, xs, ys, labels) -> None:
    for x, y, text in zip(xs, ys, labels):
        ax.annotate(text, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)


def _flag_legend(fig, series: dict[str, list[dict]], what: str) -> None:
    """A line under the plot saying what the marks beside load points mean, when there are any."""
    if any(p["flag"] for pts in series.values() for p in pts):
        legend = ", ".join(f"{mark} {why}" for why, mark in MARKS.items())
        fig.text(0.01, 0.005, f"Marked points ({legend}; see the report for why): {what}.", fontsize=8)


def plot_latency(series: dict[str, list[dict]], runs: list[Run], scenario: str, path: Path, colors: dict[str, str]):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 9), constrained_layout=True)
    for ax, (metric, xlabel) in zip(axes.flat, LATENCY_PANELS):
        dashed = False
        for engine, pts in series.items():
            pts = [p for p in pts if p[metric] is not None and p["output_throughput"] is not None]
            xs, ys = [p[metric] for p in pts], [p["output_throughput"] for p in pts]
            ax.plot(xs, ys, marker="o", label=engine, color=colors[engine])
            _label_points(ax, xs, ys, [p["load_point"] for p in pts])
            twin = metric.replace("ttft_", "ttfo_")
            answered = [p for p in pts if p["reasoning"] and p.get(twin) is not None] if twin != metric else []
            if answered:  # a reasoning model: the first answer token, beside the first token of either kind
                xs, ys = [p[twin] for p in answered], [p["output_throughput"] for p in answered]
                ax.plot(xs, ys, marker="s", linestyle="--", label=f"{engine} TTFO", color=colors[engine])
                dashed = True
        title = xlabel.split(" (")[0] + (" (dashed: TTFO, first answer token)" if dashed else "")
        ax.set(xlabel=xlabel, ylabel="Output throughput (tok/s)", title=title)
        ax.margins(0.12)
        ax.grid(alpha=0.3)
    axes.flat[0].legend(title="engine")
    _flag_legend(fig, series, "drawn as measured")
    fig.suptitle(_title(runs, f"Scenario {scenario}: output throughput vs latency (points labelled by load point)"))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_frontier(
    series: dict[str, list[dict]],
    runs: list[Run],
    scenario: str,
    path: Path,
    colors: dict[str, str],
    include_flagged: bool = False,
):
    import matplotlib.pyplot as plt

    per_gpu = all(p["throughput_per_gpu"] is not None for pts in series.values() for p in pts)
    y = "throughput_per_gpu" if per_gpu else "output_throughput"
    energy = any(p["tokens_per_joule"] is not None for pts in series.values() for p in pts)
    if energy:  # a second panel: output tokens per joule of GPU energy against the same interactivity
        fig, (ax, joules) = plt.subplots(1, 2, figsize=(18, 7), constrained_layout=True)
        _tokens_per_joule(joules, series, colors)
    else:
        fig, ax = plt.subplots(figsize=(10, 7), constrained_layout=True)
    for engine, pts in series.items():
        pts = [p for p in pts if p["interactivity"] is not None and p[y] is not None]
        front = frontier(pts, y, include_flagged)
        (line,) = ax.plot(
            [p["interactivity"] for p in front],
            [p[y] for p in front],
            marker="o",
            label=engine,
            color=colors[engine],
        )
        for flagged, marker in ((False, "o"), (True, "x")):
            some = [p for p in pts if bool(p["flag"]) == flagged]
            ax.scatter(
                [p["interactivity"] for p in some],
                [p[y] for p in some],
                color=line.get_color(),
                alpha=0.4,
                marker=marker,
            )
        _label_points(ax, [p["interactivity"] for p in pts], [p[y] for p in pts], [p["load_point"] for p in pts])
        _error_bars_and_slo(ax, pts, y, line.get_color())
    ax.set(
        xlabel="Interactivity (tok/s/user, median over requests of 1 / TPOT)",
        ylabel="Output throughput per GPU (tok/s/GPU)"
        if per_gpu
        else "Output throughput (tok/s, all GPUs: GPU count unknown)",
    )
    ax.margins(0.12)
    ax.grid(alpha=0.3)
    ax.legend(title="engine (line: Pareto frontier)")
    ax.set_title(_title(runs, f"Scenario {scenario}: throughput vs interactivity"))
    _flag_legend(fig, series, "on the frontier too" if include_flagged else "left out of the frontier")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _tokens_per_joule(ax, series: dict[str, list[dict]], colors: dict[str, str]) -> None:
    for engine, pts in series.items():
        pts = [p for p in pts if p["interactivity"] is not None and p["tokens_per_joule"] is not None]
        xs, ys = [p["interactivity"] for p in pts], [p["tokens_per_joule"] for p in pts]
        ax.plot(xs, ys, marker="o", label=engine, color=colors[engine])
        _label_points(ax, xs, ys, [p["load_point"] for p in pts])
    ax.set(
        xlabel="Interactivity (tok/s/user, median over requests of 1 / TPOT)",
        ylabel="Output tokens per joule (all sampled GPUs)",
        title="Energy efficiency",
    )
    ax.margins(0.12)
    ax.grid(alpha=0.3)
    ax.legend(title="engine")


def _error_bars_and_slo(ax, pts: list[dict], y: str, color) -> None:
    """The throughput interval of each point measured until steady, and a star on the SLO answer."""
    bars = [p for p in pts if p["throughput_ci"]]
    if bars:
        ax.errorbar(
            [p["interactivity"] for p in bars],
            [p[y] for p in bars],
            yerr=[p[y] * p["throughput_ci"] for p in bars],
            fmt="none",
            ecolor=color,
            capsize=3,
        )
    ans = slo_report.read(Path(pts[0]["folder"]).parent) if pts else None
    best = [p for p in pts if ans and p["load_point"].split()[0] == (ans.get("bounded_by") or {}).get("meets")]
    for p in best:
        ax.scatter([p["interactivity"]], [p[y]], marker="*", s=250, color=color, zorder=5)
        slos = ", ".join(f"{k}<={v:g}" for k, v in ans["slo_ms"].items())
        # Text towards the middle of the plot, so that a star near its right edge keeps it inside.
        xs = [q["interactivity"] for q in pts]
        right = p["interactivity"] > (min(xs) + max(xs)) / 2
        ax.annotate(
            f"SLO answer ({slos})",
            (p["interactivity"], p[y]),
            textcoords="offset points",
            xytext=(-8 if right else 8, -14),
            ha="right" if right else "left",
        )


def plot_cdf(data: dict[str, list[float]], run: Run, path: Path):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 5), constrained_layout=True)
    for ax, key, name in ((axes[0], "ttft_ms", "TTFT"), (axes[1], "itl_ms", "ITL")):
        xs, n = data[key], len(data[key])
        if xs:
            ax.step(xs, [(i + 1) / len(xs) for i in range(len(xs))], where="post", label=name)
        answers = data.get("ttfo_ms") if key == "ttft_ms" else None
        if answers:  # a reasoning model: TTFT is the first thinking token, TTFO the first answer token
            ax.step(answers, [(i + 1) / len(answers) for i in range(len(answers))], where="post", label="TTFO")
            ax.legend()
            name, xs = "TTFT and TTFO", sorted(xs + answers)
        if xs:
            if xs[0] > 0 and xs[-1] / xs[0] > 100:
                ax.set_xscale("log")  # a few long stalls would squash the body of the curve
        ax.set(
            xlabel=f"{name} (ms{', log scale' if ax.get_xscale() == 'log' else ''})",
            ylabel="Fraction of " + ("requests" if key == "ttft_ms" else "gaps"),
            title=f"{name} CDF ({n} values)",
            ylim=(0, 1.02),
        )
        for q in (0.5, 0.99):  # guides to read p50 and p99 off the curve
            ax.axhline(q, color="grey", linestyle=":", linewidth=1)
        ax.grid(alpha=0.3)
    fig.suptitle(
        _title([run], f"TTFT and ITL CDFs: engine {run.engine}, scenario {run.scenario}, load {run.load_point}")
    )
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _campaign_dir(run: Run, tree: Path) -> Path:
    d = run.path.parents[2] if len(run.path.parents) > 2 else run.path
    return d if d == tree or tree in d.parents else tree


def draw(tree, out=None, include_flagged: bool = False) -> None:
    """Every plot of the runs under `tree`, next to them or under `out` in the same layout."""
    import matplotlib

    matplotlib.use("Agg")
    shown, tree = tree, Path(tree).resolve()
    runs = runs_under(tree, shown=shown)
    base = Path(out).resolve() if out else tree
    written: list[Path] = []
    colors = {e: f"C{i % 10}" for i, e in enumerate(sorted({r.engine for r in runs}))}
    for (campaign, scenario), series in scenario_series(runs).items():
        group = [r for r in runs if r.campaign == campaign and r.scenario == scenario]
        folder = base / _campaign_dir(group[0], tree).relative_to(tree)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{scenario}-throughput-latency.png"
        plot_latency(series, group, scenario, path, colors)
        written.append(path)
        path = folder / f"{scenario}-frontier.png"
        plot_frontier(series, group, scenario, path, colors, include_flagged)
        written.append(path)
    for run in runs:
        folder = base / run.path.relative_to(tree)
        if run.has_records():
            folder.mkdir(parents=True, exist_ok=True)
            plot_cdf(cdf_series(run.records()), run, folder / "cdf-ttft-itl.png")
            written.append(folder / "cdf-ttft-itl.png")
        if turns.plot(run, folder / "per-turn.png"):
            written.append(folder / "per-turn.png")
        server = read_server(run.path / "server.jsonl")
        title = f"engine {run.engine}, scenario {run.scenario}, load {run.load_point}"
        if server and plot_timeline(server, title, folder / "server-timeline.png"):
            written.append(folder / "server-timeline.png")
        gpu_lines = read_lines(run.path / "gpu.jsonl")
        if gpu_lines and run.has_records():
            folder.mkdir(parents=True, exist_ok=True)
            t0 = (run.manifest.get("clock") or {}).get("t0_perf_counter") or 0.0
            if plot_gpu_timeline(gpu_lines, list(run.records()), t0, title, folder / "gpu-timeline.png"):
                written.append(folder / "gpu-timeline.png")
    for path in written:
        print(f"wrote {path}", file=sys.stderr)


def main(args) -> int:
    draw(args.tree, args.out, args.include_flagged)
    return 0
