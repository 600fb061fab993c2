"""The load points of one scenario when a campaign chooses them as it goes (`--points adaptive`,
`--slo`).

`SweepPoints` stands where a campaign holds a scenario's list of points: iterating it yields one
point at a time, and the next is chosen from what the points measured so far left on disk
(their summary.json and requests.jsonl). Nothing is kept in memory between iterations, so a
campaign run again re-derives the same choices from the finished points and resumes where it
stopped. A point it yields and nobody measures ends the iteration.

Order: the frontier (the grid as given, or adaptive.next_load's choices), then, with SLOs, the
bisection of slo.next_load. Every point, with why it was chosen and what it showed, goes into
<scenario>/points.json and points.md; the SLO answer into <scenario>/slo.json.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from bench.instrument import steady
from bench.instrument.records import read_records
from bench.results import adaptive, slo
from bench.results.report import value
from bench.results.runfolder import state, summary
from bench.results.scenarios import Point, points

MAX_POINTS = 8  # frontier points per scenario in adaptive mode, the two ends included
SLO_POINTS = 8  # bisection points at most: enough to narrow a 1..256 bracket to one step
MIN_REQUESTS = 50  # completed requests (and 2 x C) before an adaptive point may be steady, unless its cap is lower


class SweepPoints:
    def __init__(
        self,
        grid: list[Point],
        mode: str,
        target: float,
        slos: dict | None,
        resolution: float = 0.25,
        max_points: int = MAX_POINTS,
    ):
        self.grid, self.mode, self.target, self.slos, self.max_points = grid, mode, target, slos, max_points
        self.resolution = resolution  # SLO bisection stops when the bracket is this narrow (relative)
        self.closed = [p for p in grid if p.rate is None]
        self.integer = bool(self.closed)  # concurrency when the grid has closed-loop points, else rate
        self.folder = grid[0].out.parent  # <campaign>/<label>/<scenario>
        self.seen: list[str] = []

    # the list-like face a campaign uses
    def __len__(self) -> int:
        return (len(self.grid) if self.mode == "grid" else self.max_points) + (
            SLO_POINTS if self.slos and self.mode == "adaptive" else 0
        )

    def __getitem__(self, i: int) -> Point:
        return self.grid[i]

    def index(self, p: Point) -> int:
        return self.seen.index(p.name) if p.name in self.seen else len(self.seen)

    # choosing
    def point_at(self, load: float) -> Point:
        s = self.grid[0].scenario
        if self.integer:
            one = replace(s, concurrency=[int(load)], rates=[])
        else:
            one = replace(s, concurrency=[], rates=[float(f"{load:.3g}")])
        p = points(one, self.folder.parent)[0]
        if self.mode == "adaptive":  # the grid's request count is the cap; steadiness usually stops it sooner
            least = min(p.num_prompts, max(MIN_REQUESTS, 2 * (p.concurrency or 0)))  # two waves of a closed loop
            p.run_args = ["--until-steady", "--ci-target", f"{self.target:g}", "--max-requests", str(p.num_prompts)]
            p.run_args += ["--min-requests", str(least)]
        return p

    def load_of(self, p: Point) -> float:
        return p.concurrency if self.integer else p.rate

    def __iter__(self):
        self.seen, log, frontier, settled = [], [], [], set()

        def visit(p: Point, why: str):
            """Yield p, then read what it measured; None when it was not measured."""
            yield p
            self.seen.append(p.name)
            st = state(p.out)
            if st == "new":
                return None
            s = summary(p.out) if st != "failed" or (p.out / "summary.json").exists() else {}
            entry = _entry(p, self.load_of(p), why, st, s, self.target)
            log.append(entry)
            self._write(log)
            return entry

        loads = [self.load_of(p) for p in (self.closed or self.grid)]
        if self.mode == "grid":
            todo = [(p, "grid point") for p in self.grid]
        else:
            todo = [
                (self.point_at(min(loads)), "lowest load of the grid"),
                (self.point_at(max(loads)), "highest load of the grid"),
            ]
        for p, why in todo:
            entry = yield from visit(p, why)
            if entry is None:
                return
            if entry["fp"]:
                frontier.append(entry["fp"])
        while self.mode == "adaptive" and len(log) < self.max_points:
            nxt = adaptive.next_load(frontier, settled, self.target, self.integer, loads)
            if nxt is None:
                break
            entry = yield from visit(self.point_at(nxt[0]), nxt[1])
            if entry is None:
                return
            if entry["fp"]:
                entry["taught"] = adaptive.after(frontier, entry["fp"], settled, self.target)
                frontier.append(entry["fp"])
                self._write(log)
        if self.mode == "adaptive":
            log.append({"settled": adaptive.why_settled(frontier, settled, self.target, self.integer, loads)})
            self._write(log)
        if self.slos:
            yield from self._search(log, visit, loads)

    def _search(self, log: list, visit, loads: list[float]):
        judged = {}
        for entry in log:
            if "load" in entry and entry["loop"] == ("closed" if self.integer else "open"):
                judged[entry["load"]] = self._judge(entry)
        for _ in range(SLO_POINTS if self.mode == "adaptive" else 0):
            nxt = slo.next_load(list(judged.values()), min(loads), max(loads), self.integer, self.resolution)
            if nxt is None or nxt in judged:
                break
            entry = yield from visit(self.point_at(nxt), f"SLO bisection ({', '.join(self.slos)})")
            if entry is None:
                return
            judged[nxt] = self._judge(entry)
        ans = slo.answer(list(judged.values()), self.slos, self.integer)
        ans["mode"] = self.mode
        if ans["bounded_by"]["meets"]:
            out = self.folder / ans["bounded_by"]["meets"]
            ans["goodput_req_s"] = slo.goodput(list(read_records(out / "requests.jsonl")), self.slos)
        ans["requests"] = sum(e.get("requests") or 0 for e in log if "load" in e)
        (self.folder / "slo.json").write_text(json.dumps(ans, indent=2) + "\n")

    def _judge(self, entry: dict) -> slo.Judged:
        out = self.folder / entry["point"]
        recs = list(read_records(out / "requests.jsonl")) if (out / "requests.jsonl").exists() else []
        return slo.judge(entry["load"], entry["point"], recs, self.slos, failed=entry["state"] != "done")

    def _write(self, log: list) -> None:
        public = [{k: v for k, v in e.items() if k != "fp"} for e in log]
        (self.folder / "points.json").write_text(json.dumps({"mode": self.mode, "points": public}, indent=2) + "\n")
        (self.folder / "points.md").write_text(_markdown(self.folder.name, self.mode, public))


def _entry(p: Point, load: float, why: str, st: str, s: dict, target: float) -> dict:
    fp = steady_point(p.out, target, load, closed=not p.rate) if st == "done" else None
    return {
        "load": load,
        "point": p.name,
        "loop": "open" if p.rate else "closed",
        "why": why,
        "state": st,
        "requests": (s.get("completed") or 0) + (s.get("failed") or 0),
        "stopped_by": (s.get("steady") or {}).get("stopped_by") or "num_prompts",
        "steady_output_throughput": fp.throughput if fp else None,
        "throughput_ci_rel": fp.ci if fp and fp.ci else None,
        "steady_interactivity_p50": fp.interactivity if fp else None,
        "duration_s": s.get("duration"),
        "fp": fp,
    }


def steady_point(run: Path, target: float, load: float, closed: bool = True) -> adaptive.FrontierPoint | None:
    """A point on the frontier from its steady state: output throughput (mean and relative 95 %
    half-width of the interval its run judged with --until-steady, else the same rule over its
    records up to the last send; `closed`: a closed loop) and interactivity (median 1 / TPOT of the
    requests counted in that window, past the same start-up cut). The adaptive choice, points.md
    and `just sweep-bench` all read a point by these, not by the summary's figures over every
    request: ramp-up and drain weigh more in a short run than in a long one (the drain's last
    requests run at falling load, so their TPOT is low: c64 of 256-128 in sweep-bench run 6 read
    83.0 tok/s/user over 270 requests against 76.3 over 640, and 77.4 against 75.8 in their steady
    windows), and an interval belongs beside its own mean. A point too short for batches keeps the
    summary's figures, with no interval."""
    s = summary(run)
    judged = s.get("steady")
    recs = list(read_records(run / "requests.jsonl")) if (run / "requests.jsonl").exists() else []
    if judged is None and recs:
        judged = steady.judge(recs, target, 1, closed=closed)
    ivs = (judged or {}).get("intervals") or {}
    thr, tpot = ivs.get("output_throughput"), ivs.get("mean_tpot")
    if thr is None or tpot is None:  # too few requests for batches (a short low-load point): no interval
        got = value(s, "output_throughput"), value(s, "interactivity_p50")
        return adaptive.FrontierPoint(load, got[0], got[1]) if all(got) else None
    end = judged["window_s"][1]
    until = judged.get("whole_until_s", end)  # summaries before it: the window's end
    measured = [r for r in recs if not r.warmup and r.ok]
    ended = [(e, t) for e, t in steady.tpots_in_window(measured, end, until) if t]
    ended = ended[len(ended) * tpot["cut"] // (tpot["cut"] + tpot["batches"]) :]
    inter = float(np.median([1.0 / t for _, t in ended]))
    return adaptive.FrontierPoint(load, thr["mean"], inter, thr["rel"])


def _markdown(scenario: str, mode: str, log: list[dict]) -> str:
    lines = [
        f"# {scenario}: load points ({mode})",
        "",
        "| # | point | why | requests | stopped by | out tok/s, steady | +- | tok/s/user, steady | what it showed |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    n, settled = 0, []
    for e in log:
        if "settled" in e:
            settled = ["", "Stretches of the frontier left without more points, and why:", ""]
            settled += [f"- {line}" for line in e["settled"]]
            continue
        n += 1
        ci = f"{e['throughput_ci_rel']:.1%}" if e.get("throughput_ci_rel") is not None else "-"
        thr = f"{e['steady_output_throughput']:,.0f}" if e.get("steady_output_throughput") else "-"
        inter = f"{e['steady_interactivity_p50']:.1f}" if e.get("steady_interactivity_p50") else "-"
        lines.append(
            f"| {n} | {e['point']} | {e['why']} | {e['requests']} | {e['stopped_by']} | {thr} | {ci} | {inter} | "
            f"{e.get('taught', e['state'] if e['state'] != 'done' else '')} |"
        )
    return "\n".join(lines + settled) + "\n"


def read_log(folder: Path) -> dict | None:
    """A scenario folder's points.json, None when it has none."""
    f = folder / "points.json"
    return json.loads(f.read_text()) if f.exists() else None
