"""`bench matrix FILE --executor slurm`: one Slurm batch job per cell.

Each cell's job script is recipes/slurm/cell.sbatch with the cell's nodes, GPUs, time limit, partition,
account and constraint filled in, written to <results>/<matrix>/cells/<id>/batch.sh and kept there, so
`sbatch batch.sh` runs the cell again by hand. The job runs `bench matrix FILE --cell ID` on its first
node, which does what a local cell does (bench.results.matrix_local), writing into the shared results
folder; a multi-node cell with per_node starts its recipe on every node through srun. With --serial
each job depends on the one before (afterany), for cells that need the same nodes. --wait polls the
queue until every job has ended, then writes the report; --status shows each job's Slurm state.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

from bench.errors import UserError
from bench.paths import ROOT
from bench.results import matrix_cell as mc
from bench.results.matrix_file import Cell, Matrix
from bench.results.matrix_queue import ACTIVE, job_of, queue_states
from bench.results.matrix_status import final_report, status

TEMPLATE = ROOT / "recipes" / "slurm" / "cell.sbatch"
POLL = 2.0  # seconds between looks at the queue while waiting for the jobs
QUEUED = "queued"


def script(m: Matrix, cell: Cell, results: Path) -> str:
    """The cell's batch script, from the one template."""
    d = mc.folder(results, m, cell).resolve()
    lines = [f"--gpus-per-node={cell.gpus}"] * bool(cell.gpus) + ["--exclusive"] * cell.exclusive
    lines += [f"--{k}={v}" for k in ("partition", "account", "constraint") if (v := getattr(cell, k))]
    lines += cell.sbatch_args
    values = {
        "SCRIPT": shlex.quote(str(d / "batch.sh")),
        "JOB_NAME": f"{m.name}.{cell.id}",
        "NODES": str(cell.nodes),
        "TIME": cell.time,
        "CELL_DIR": str(d),
        "SBATCH_LINES": "\n".join(f"#SBATCH {line}" for line in lines),
        "ROOT": shlex.quote(str(ROOT)),
        "CELL": shlex.quote(cell.id),
        "MATRIX": m.name,
        "FILE": shlex.quote(str(m.path)),
        "RESULTS": shlex.quote(str(results.resolve())),
    }
    return re.sub(r"@([A-Z_]+)@", lambda x: values[x.group(1)], TEMPLATE.read_text())


def _tool(name: str) -> str:
    if path := shutil.which(name):
        return path
    raise UserError(f"{name} not found: run --executor slurm on a node of a Slurm cluster (or install slurm-client)")


def submit(m: Matrix, cell: Cell, results: Path, after: str | None) -> str:
    d = mc.folder(results, m, cell)
    d.mkdir(parents=True, exist_ok=True)
    batch = d / "batch.sh"
    batch.write_text(script(m, cell, results))
    batch.chmod(0o755)
    words = [_tool("sbatch"), "--parsable"] + ([f"--dependency=afterany:{after}"] if after else []) + [str(batch)]
    done = subprocess.run(words, capture_output=True, text=True)
    if done.returncode:
        raise UserError(f"sbatch refused cell {cell.id}: {done.stderr.strip() or done.stdout.strip()}")
    job = done.stdout.strip().split(";")[0]
    (d / "job.json").write_text(json.dumps({"job": job, "submitted": mc.now(), "after": after}) + "\n")
    mc.write_state(d, status=QUEUED, reason="", log_tail=[], job=job)
    return job


def run(m: Matrix, todo: list[Cell], cells: list[Cell], args) -> int:
    say = print
    jobs, last = {}, None
    live = queue_states([j for c in todo if (j := job_of(mc.folder(args.results, m, c)))])
    for c in todo:
        j = job_of(mc.folder(args.results, m, c))
        if j and live.get(j) in ACTIVE:
            say(f"{c.id}: already in the queue as job {j} ({live[j]}), not submitted again", flush=True)
        else:
            j = submit(m, c, args.results, last if args.serial else None)
            say(f"{c.id}: submitted as job {j} ({c.nodes} node(s), {c.gpus} GPU(s) each, time {c.time})", flush=True)
        jobs[c.id], last = j, j
    if not args.wait:
        say(f"`bench matrix {args.file} --status` shows the jobs; `bench report {args.results / m.name}` once they end")
        return 0
    say(f"waiting for {len(jobs)} job(s) to end", flush=True)
    try:
        while any(s in ACTIVE for s in queue_states(list(jobs.values())).values()):
            time.sleep(POLL)  # polling the queue, the only way to see a job end
    except KeyboardInterrupt:
        say(f"stopped waiting; the jobs go on: `bench matrix {args.file} --status` shows them, `scancel` stops them")
        return 130
    for c in cells:  # a job that ended without finishing its cell (killed, time limit) says so in the cell
        d = mc.folder(args.results, m, c)
        if mc.read_state(d).get("status") in (QUEUED, mc.RUNNING):
            outs = sorted(d.glob("slurm-*.out"))
            mc.write_state(d, status=mc.FAILED, reason="the Slurm job ended before the cell finished; see its output",
                           log_tail=mc.tail(outs[-1]) if outs else [])  # fmt: skip
    status(m, cells, args.results)
    final_report(m, args.results)
    return 1 if any(mc.read_state(mc.folder(args.results, m, c)).get("status") != mc.DONE for c in cells) else 0
