"""A matrix's state at a glance (`bench matrix FILE --status`) and the report over all its cells."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from tabulate import tabulate

from bench.errors import UserError
from bench.results import matrix_cell as mc
from bench.results import plot, report
from bench.results.matrix_file import Cell, Matrix
from bench.results.matrix_queue import job_states

say = partial(print, flush=True)


def status(m: Matrix, cells: list[Cell], results: Path) -> int:
    """One row per cell: its Slurm job and state (if submitted), its result, runs written, why not done."""
    jobs = job_states(m, cells, results)
    rows = []
    for c in cells:
        st = mc.read_state(mc.folder(results, m, c))
        pts = mc.planned(c, results / m.name)
        runs = f"{sum(p.out.joinpath('summary.json').is_file() for p in pts)}/{len(pts)}"
        rows.append([c.id, jobs.get(c.id, "-"), st.get("status", "not started"), runs, st.get("reason") or ""])
    say(f"matrix {m.name} ({m.path}), results in {results / m.name}")
    say(tabulate(rows, ["Cell", "Slurm job", "Result", "Runs", "Why"]))
    return 0


def final_report(m: Matrix, results: Path) -> None:
    """report.md, report.csv and the plots in the matrix's folder, over every cell's runs."""
    camp = results / m.name
    try:
        report.write(camp, markdown=camp / "report.md", csv_file=camp / "report.csv")
        plot.draw(camp)
    except UserError as e:
        say(f"no report: {e}")
