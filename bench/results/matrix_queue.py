"""What Slurm says of a matrix's jobs: each cell's job id (its job.json) and the job's state."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

from bench.results import matrix_cell as mc
from bench.results.matrix_file import Cell, Matrix

ACTIVE = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING"}


def job_of(d: Path) -> str | None:
    try:
        return str(json.loads((d / "job.json").read_text())["job"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def queue_states(jobs: list[str]) -> dict[str, str]:
    """Slurm's state of each job still known to the controller (PENDING, RUNNING, COMPLETED, ...)."""
    if not jobs or not shutil.which("squeue"):
        return {}
    out = subprocess.run(["squeue", "-h", "-o", "%i %T", "-j", ",".join(jobs)], capture_output=True, text=True)
    states = dict(line.split(None, 1) for line in out.stdout.splitlines() if " " in line)
    for job in set(jobs) - set(states):  # ended: the controller keeps it a while (MinJobAge)
        show = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True).stdout
        if hit := re.search(r"JobState=(\S+)", show):
            states[job] = hit.group(1)
    return states


def job_states(m: Matrix, cells: list[Cell], results: Path) -> dict[str, str]:
    """Cell id -> 'JOB STATE' for the cells submitted to Slurm ('ended' once Slurm has forgotten it)."""
    jobs = {c.id: j for c in cells if (j := job_of(mc.folder(results, m, c)))}
    states = queue_states(list(jobs.values()))
    return {cid: f"{j} {states.get(j, 'ended')}" for cid, j in jobs.items()}
