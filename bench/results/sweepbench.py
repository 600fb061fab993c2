"""`just sweep-bench`: a fixed grid against adaptive points, on the same server, side by side.

For each scenario of the set (default recipes/sweep-bench.toml), one campaign sweeps the
grid as the set lists it, and right after it a second sweeps it with `--points adaptive`, both
with the same SLO search (`--slo`). It prints, per scenario:
- the frontier: how far each grid point lies from the adaptive frontier (the line through the
  adaptive points, in log throughput and log interactivity, so a distance reads as a relative
  change; both from each point's steady state, see steady_point), the largest of
  them against the target (2 %), and how many lie within what chance allows (the grid point's
  own 95 % interval, by the same batch-means rule, plus the nearest adaptive points'): on a host
  whose engine speed wanders, two sweeps cannot agree closer than that;
- how far each grid point's first requests (as many as an adaptive point at its load stops
  with) read from the whole point, on the same records: a start-up transient slower than that
  floor, which no stopping rule can see, bounds the agreement from below too (early_gaps);
- the cost: requests sent (each point's warm-up included) and wall time of each, and their ratio
  (target <= 40 %); the engine is first warmed up by a short run that counts for neither;
- the SLO answer of each (grid: between two of its points; adaptive: by bisection, to one grid
  step unless --slo-resolution says finer), and whether it lies within one grid step of the grid's.
A benchmark, not a test: it prints figures and writes them to <out>/sweep-bench.md and .json.

    python -m bench.results.sweepbench --base-url http://127.0.0.1:8000/v1 --out results/sweep-bench
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from datetime import datetime
from pathlib import Path

from tabulate import tabulate

from bench.errors import UserError, exit_status
from bench.instrument import steady
from bench.instrument.records import read_records
from bench.paths import RESULTS, ROOT
from bench.results import adaptive
from bench.results.scenarios import find_set, load_set
from bench.results.slo_report import read as read_answer
from bench.results.sweep import MIN_REQUESTS, read_log, steady_point

TARGET_COST = 0.40  # adaptive requests and wall time, as a share of the grid's
TARGET_FRONTIER = 0.02
SWEEP_SET = ROOT / "recipes" / "sweep-bench.toml"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base-url", default="http://127.0.0.1:8000/v1", help="The running server to sweep.")
    p.add_argument("--set", default=str(SWEEP_SET), help="Scenario set: a name in recipes/scenarios/ or a .toml file.")
    p.add_argument("--slo", default="ttft_p99=150,tpot_p99=10", help="SLOs both sweeps search for (ms).")
    p.add_argument("--ci-target", type=float, default=TARGET_FRONTIER, help="Adaptive points' interval target.")
    # The grid answers to one of its steps (c16..c32); bisecting finer (the campaign's default, 25 %)
    # bought the adaptive sweep a sharper answer than the one it is compared with, for 130 and 394 more
    # requests in run 5 (c6, c7; c23, c27). A doubling grid's step is x2, so: until the range is that wide.
    p.add_argument(
        "--slo-resolution",
        type=float,
        default=1.0,
        help="The adaptive sweep's SLO bisection stops at this relative width (1.0: one doubling, the grid's step).",
    )
    p.add_argument("--out", type=Path, help="Results folder (default results/sweep-bench/<time>).")
    p.add_argument(
        "--recompare",
        type=Path,
        metavar="DIR",
        help="Sweep nothing: print the comparison of an earlier sweep-bench folder again, as this version "
        "computes it (its wall times from its sweep-bench.json, which is left as it is).",
    )
    # No scraping by default: on the 2-core CPU engine each /metrics request kept the client off the
    # CPU for 0.3-1.7 s (send lag p99 1.2-1.7 s at C=8 with scrapes, 4-13 ms without), so the
    # sweeps compared the host's stalls, not the two ways of placing points.
    p.add_argument(
        "--run-args",
        default="--scrape-interval 0",
        help="Extra `bench run` flags for every point of both sweeps (default: no server scraping).",
    )


def campaign(args, name: str, scenario: str, others: list[str], extra: list[str]) -> tuple[int, float]:
    """One sweep of one scenario into <out>/<name>; (exit status, wall seconds)."""
    from bench.results import campaign as bench_campaign

    argv = [args.set_path, "--base-url", args.base_url, "--label", "engine", "--name", name]
    argv += ["--results", str(args.out), "--pause", "0", "--slo", args.slo, *extra]
    argv += [f"--skip={s}" for s in others]
    argv += [f"--run-args={args.run_args}"] if args.run_args else []
    print(f"sweep-bench: {scenario}, {name} sweep", file=sys.stderr, flush=True)
    started = time.monotonic()
    p = argparse.ArgumentParser(prog="bench campaign")
    bench_campaign.add_arguments(p)
    rc = exit_status("bench campaign", lambda: bench_campaign.main(p.parse_args(argv)))
    return rc, time.monotonic() - started


def warm_up(args) -> None:
    """A freshly started engine answers its first requests slowly (the first point measured 2.5 x the
    TTFT of the same point later); a short run it leaves out warms it for both sweeps alike."""
    import shlex

    from bench.instrument import spec
    from bench.instrument.measure import measure

    print("sweep-bench: warming the engine up (64 requests at concurrency 16, about 10 s)", file=sys.stderr, flush=True)
    argv = ["--base-url", args.base_url, "--concurrency", "16", "--num-prompts", "64", "--input-len", "256"]
    argv += ["--output-len", "64", "--no-progress", "--scrape-interval", "0", "--out", str(args.out / "warmup")]
    measure(spec.parse(argv + shlex.split(args.run_args)))


def requests_sent(folder: Path) -> int:
    """Every request the sweep sent, warm-up included: the lines of its records."""
    return sum(sum(1 for _ in f.open()) for f in folder.rglob("requests.jsonl"))


def frontier_points(folder: Path, target: float) -> list[adaptive.FrontierPoint]:
    log = read_log(folder) or {"points": []}
    out = []
    for e in log["points"]:
        if e.get("state") == "done" and e["loop"] == "closed":
            if got := steady_point(folder / e["point"], target, e["load"]):
                out.append(got)
    return sorted(out, key=lambda p: p.load)


def early_gaps(folder: Path, target: float, whole: list[adaptive.FrontierPoint]) -> dict[str, float]:
    """Per grid point, how far the throughput its first requests show lies from its whole run's:
    the records an adaptive point at that load would have stopped with (MIN_REQUESTS or two waves
    of C sent before the oldest send still in flight and ended, and one more wave of C in flight),
    judged the same way. Same server, same minutes: the gap is the point's own slow start-up transient, which
    no stopping rule that sees only those requests can tell from its steady state, so an adaptive
    frontier cannot agree with the grid closer than this on that server. `whole`: the grid's points
    as frontier_points read them. Points the adaptive sweep would have run whole are left out."""
    log, out = read_log(folder) or {"points": []}, {}
    by_load = {p.load: p for p in whole}
    for e in log["points"]:
        if e.get("state") != "done" or e["loop"] != "closed" or e["load"] not in by_load:
            continue
        run, c = folder / e["point"], int(e["load"])
        recs = sorted((r for r in read_records(run / "requests.jsonl") if not r.warmup), key=lambda r: r.sent)
        m = max(MIN_REQUESTS, 2 * c)
        if len(recs) <= m + c:
            continue
        # The grid's load stayed whole until its last send, as a running point's does until it judges.
        judged = steady.judge(recs[: m + c], target, 1, end=recs[m].sent, whole_until=recs[-1].sent)
        early = judged["intervals"]["output_throughput"]
        if early:
            out[f"c{c}"] = early["mean"] / by_load[e["load"]].throughput - 1
    return out


def noise_allowance(g: adaptive.FrontierPoint, adapt: list[adaptive.FrontierPoint]) -> float:
    """How far apart two measurements of the point may lie by chance: its interval plus the widest
    of the two adaptive points nearest its load."""
    near = sorted(adapt, key=lambda a: abs(math.log(a.load / g.load)))[:2]
    return g.ci + max((a.ci for a in near), default=0.0)


def compare(args, scenario: str, walls: dict[str, float]) -> dict:
    grid_dir, adapt_dir = (args.out / name / "engine" / scenario for name in ("grid", "adaptive"))
    grid, adapt = frontier_points(grid_dir, args.ci_target), frontier_points(adapt_dir, args.ci_target)
    off = {f"c{g.load:g}": adaptive.deviation(g, adapt) for g in grid} if grid and adapt else {}
    allowed = {f"c{g.load:g}": max(TARGET_FRONTIER, noise_allowance(g, adapt)) for g in grid}
    sent = {"grid": requests_sent(grid_dir), "adaptive": requests_sent(adapt_dir)}
    gaps = early_gaps(grid_dir, args.ci_target, grid)
    answers = {"grid": read_answer(grid_dir), "adaptive": read_answer(adapt_dir)}
    lo, hi = (answers["grid"] or {}).get("range", [None, None])
    a = (answers["adaptive"] or {}).get("load")
    loads = [g.load for g in grid]
    step_below = max((x for x in loads if lo is not None and x < lo), default=lo)
    within = a is not None and lo is not None and step_below <= a <= (hi if hi is not None else float("inf"))
    return {
        "scenario": scenario,
        "grid_points": len(grid),
        "adaptive_points": len(adapt),
        "deviation_by_grid_point": off,
        "max_deviation": max(off.values()) if off else None,
        "noise_allowance_by_grid_point": allowed,
        "within_noise": sum(bool(off[k] <= allowed[k]) for k in off),
        "early_gap_by_grid_point": gaps,
        "max_early_gap": max((abs(g) for g in gaps.values()), default=None),
        "early_within_target": sum(abs(g) <= TARGET_FRONTIER for g in gaps.values()),
        "requests": sent,
        "requests_ratio": sent["adaptive"] / sent["grid"] if sent["grid"] else None,
        "wall_s": walls,
        "wall_ratio": walls["adaptive"] / walls["grid"] if walls["grid"] else None,
        "slo_grid_range": [lo, hi],
        "slo_adaptive": a,
        "slo_adaptive_range": (answers["adaptive"] or {}).get("range"),
        "slo_within_one_grid_step": within,
        "slo_requests": {k: (v or {}).get("requests") for k, v in answers.items()},
    }


def _range(lo, hi) -> str:
    if lo is None:
        return f"none meets (c{hi} misses)" if hi else "-"
    return f"c{lo}..c{hi}" if hi else f"c{lo} or more"


def _pct(x) -> str:
    return "-" if x is None else f"{x:.1%}"


def table(rows: list[dict], fmt: str) -> str:
    body = []
    for r in rows:
        gaps = r["early_gap_by_grid_point"]
        early = f"{_pct(r['max_early_gap'])} ({r['early_within_target']}/{len(gaps)} within 2 %)"
        body.append(
            [
                r["scenario"],
                f"{r['grid_points']} / {r['adaptive_points']}",
                f"{_pct(r['max_deviation'])} ({'ok' if (r['max_deviation'] or 1) <= TARGET_FRONTIER else 'over'} 2 %)",
                f"{r['within_noise']}/{r['grid_points']}",
                early,
                f"{r['requests']['grid']} / {r['requests']['adaptive']} = {_pct(r['requests_ratio'])}",
                f"{r['wall_s']['grid']:.0f} / {r['wall_s']['adaptive']:.0f} s = {_pct(r['wall_ratio'])}",
                _range(*r["slo_grid_range"]),
                f"c{r['slo_adaptive']} ({'within' if r['slo_within_one_grid_step'] else 'NOT within'} one grid step)",
            ]
        )
    cols = [
        "Scenario",
        "Points grid / adaptive",
        "Frontier: max distance",
        "Within the intervals",
        "Grid's first requests vs its whole points",
        "Requests grid / adaptive",
        "Wall time grid / adaptive",
        "SLO answer, grid",
        "SLO answer, adaptive",
    ]
    return tabulate(body, cols, tablefmt=fmt)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.results.sweepbench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p)
    args = p.parse_args(argv)

    def again() -> int:
        earlier = args.recompare / "sweep-bench.json"
        if not earlier.is_file():
            raise UserError(f"{args.recompare} holds no sweep-bench.json; give a folder `just sweep-bench` wrote")
        args.out = args.recompare
        rows = [compare(args, r["scenario"], r["wall_s"]) for r in json.loads(earlier.read_text())]
        print(table(rows, "simple"))
        return 0

    def body() -> int:
        if args.recompare:
            return again()
        args.set_path = str(find_set(args.set))
        names = [s.name for s in load_set(Path(args.set_path))]
        args.out = args.out or RESULTS / "sweep-bench" / f"{datetime.now():%Y%m%d-%H%M%S}"
        if (args.out / "grid").exists() or (args.out / "adaptive").exists():
            raise UserError(f"{args.out} already holds sweeps; choose another --out (nothing is overwritten)")
        print(
            f"sweep-bench: {len(names)} scenarios x (grid, adaptive) against {args.base_url}, into {args.out}; "
            "on the CPU engine with 2 cores this takes about 10 minutes, on the calibration server under 2",
            file=sys.stderr,
            flush=True,
        )
        warm_up(args)
        rows, status = [], 0
        for s in names:  # grid then adaptive per scenario, so both see the server in the same minutes
            others = [o for o in names if o != s]
            walls = {}
            for name, extra in (
                ("grid", ["--points", "grid"]),
                (
                    "adaptive",
                    ["--points", "adaptive", "--ci-target", f"{args.ci_target:g}"]
                    + ["--slo-resolution", f"{args.slo_resolution:g}"],
                ),
            ):
                rc, walls[name] = campaign(args, name, s, others, extra)
                if rc:
                    print(
                        f"sweep-bench: the {name} sweep of {s} ended with status {rc}; its figures below are "
                        "incomplete",
                        file=sys.stderr,
                    )
                    status = 1
            rows.append(compare(args, s, walls))
        print()
        print(table(rows, "simple"))
        (args.out / "sweep-bench.json").write_text(json.dumps(rows, indent=2) + "\n")
        (args.out / "sweep-bench.md").write_text(table(rows, "github") + "\n")
        print(
            f"\nwrote {args.out / 'sweep-bench.md'} and sweep-bench.json; per-point logs: "
            f"{args.out}/adaptive/engine/<scenario>/points.md",
            file=sys.stderr,
        )
        return status

    return exit_status("sweep-bench", body)


if __name__ == "__main__":
    sys.exit(main())
