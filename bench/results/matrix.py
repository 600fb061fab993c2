"""`bench matrix FILE`: every cell of a matrix (a serve recipe x a scenario set), unattended, then one
report over all of them.

The file is read by bench.results.matrix_file; each cell runs as bench.results.matrix_local says (fit
check, start, warm-up and campaign, stop), here one after another, or as one Slurm batch job each
(bench.results.matrix_slurm). Cells keep their state in <results>/<matrix>/cells/<id>/state.json, so
the same command again resumes: finished cells are kept, failed and interrupted ones measured again
(--skip-failed leaves failed ones be). Exit status: 0 every cell done, 1 some failed, 2 bad input,
130 Ctrl-C.
"""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path

from bench.errors import UserError
from bench.paths import RESULTS
from bench.results import matrix_cell as mc
from bench.results.matrix_file import Cell, Matrix, load_matrix
from bench.results.matrix_status import final_report, status

say = partial(print, flush=True)
WHEN = "PORT: a free port picked when the cell starts; HEAD, RANK: the job's first node, this node's rank"
WHEN = "PORT: a free port picked when the cell starts; HEAD, RANK: the job's first node, this node's rank"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE", help="Matrix file: a name in recipes/matrices/ (e.g. demo) or a .toml file.")
    p.add_argument("--results", type=Path, default=RESULTS, help="Results root folder ($RESULTS or results/).")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="Print every cell's serve command, load points and fit check (and Slurm batch script), start nothing.",
    )
    p.add_argument("--status", action="store_true", help="Print every cell's state (and Slurm job state) and stop.")
    p.add_argument(
        "--executor",
        choices=["local", "slurm"],
        default="local",
        help="local: cells one after another on this machine; slurm: one sbatch job per cell.",
    )
    p.add_argument(
        "--serial",
        action="store_true",
        help="Slurm: each job waits for the one before (afterany), for cells that need the same nodes.",
    )
    p.add_argument(
        "--wait",
        action="store_true",
        help="Slurm: wait until every job has ended, then write the report (else run `bench report` later).",
    )
    p.add_argument(
        "--skip-failed",
        action="store_true",
        help="Leave cells that failed in an earlier run as they are instead of measuring them again.",
    )
    p.add_argument(
        "--cell",
        action="append",
        default=[],
        metavar="ID",
        help="Run only this cell (label.set, repeatable); the Slurm batch scripts run their cell this way.",
    )
    p.add_argument(
        "--no-report", action="store_true", help="Leave out the final report and plots (a batch job's cell)."
    )


def chosen(m: Matrix, ids: list[str]) -> list[Cell]:
    if unknown := [i for i in ids if i not in {c.id for c in m.cells}]:
        raise UserError(f"{m.path.name} has no cell {unknown[0]!r}; its cells: {', '.join(c.id for c in m.cells)}")
    return [c for c in m.cells if not ids or c.id in ids]


def to_do(m: Matrix, cells: list[Cell], results: Path, skip_failed: bool) -> list[Cell]:
    """The cells to measure now; says why each other one is left."""
    out = []
    for c in cells:
        st = mc.read_state(mc.folder(results, m, c))
        if st.get("status") == mc.DONE:
            say(f"{c.id}: finished earlier ({st.get('ended')}), kept")
        elif st.get("status") == mc.FAILED and skip_failed:
            say(f"{c.id}: failed earlier, left as it is (--skip-failed): {st.get('reason')}")
        else:
            out.append(c)
    return out


# --dry-run


def dry_run(m: Matrix, cells: list[Cell], results: Path, executor: str) -> None:
    from bench.serve.fit import verdicts_table

    say(
        f"matrix {m.name}: {len(cells)} cell(s), results in {results / m.name}"
        + (f"; {m.description}" * bool(m.description))
    )
    for c in cells:
        pts = mc.planned(c, results / m.name)
        say(f"\ncell {c.id}: {c.recipe} x {Path(c.scenarios).name}")
        say(f"  serve: {mc.shown(c, 'PORT', 'HEAD', 'RANK')}   ({WHEN})")
        rendered, verdicts, why_not = mc.fit_check(c, pts, 8000)
        for line in rendered.splitlines():
            say(f"  runs:  {line}   (as rendered with PORT=8000)")
        say(f"  points: {len(pts)}: " + ", ".join(f"{p.scenario.name} {p.name} ({p.num_prompts})" for p in pts))
        say(f"  fit check: {why_not or mc.summary_line(verdicts)}")
        if verdicts:
            say("  " + verdicts_table(verdicts).replace("\n", "\n  "))
        if reason := mc.refused(c, verdicts):
            say(f"  would fail: {reason}")
        if executor == "slurm":
            from bench.results import matrix_slurm

            say("  batch script:\n    " + matrix_slurm.script(m, c, results).replace("\n", "\n    "))


def main(args) -> int:
    m = load_matrix(args.file)
    cells = chosen(m, args.cell)
    if args.dry_run:
        dry_run(m, cells, args.results, args.executor)
        return 0
    if args.status:
        return status(m, cells, args.results)
    if args.executor == "slurm":
        from bench.results import matrix_slurm

        return matrix_slurm.run(m, to_do(m, cells, args.results, args.skip_failed), cells, args)
    if args.serial or args.wait:
        raise UserError("--serial and --wait are for --executor slurm; a local matrix runs its cells in turn anyway")
    if big := [c.id for c in cells if c.nodes > 1]:
        raise UserError(
            f"cell {big[0]} needs more than one node: run the matrix with --executor slurm, or pick the other "
            "cells with --cell"
        )
    from bench.results.matrix_local import run_cell

    todo = to_do(m, cells, args.results, args.skip_failed)
    failed = []
    try:
        for n, c in enumerate(todo, 1):
            say(f"[cell {n}/{len(todo)}] {c.id}: {c.recipe} x {Path(c.scenarios).name}")
            if run_cell(m, c, args.results, say) != mc.DONE:
                failed.append(c.id)
    except KeyboardInterrupt:
        say(f"matrix {m.name}: interrupted; the server is stopped; run the same command again to resume")
        return 130
    say(f"matrix {m.name}: {len(todo) - len(failed)} cell(s) measured, {len(failed)} failed" + (
        f" ({', '.join(failed)}; run the same command again to retry them)" if failed else ""))  # fmt: skip
    if not args.no_report:
        final_report(m, args.results)
    return 1 if any(mc.read_state(mc.folder(args.results, m, c)).get("status") != mc.DONE for c in cells) else 0
