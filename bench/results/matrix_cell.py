"""One cell of a matrix on disk, and what is known about it before it starts.

<results>/<matrix>/cells/<cell id>/ holds
    state.json   status (running, done, failed, interrupted), why when not done, the server log's last
                 lines, port, host, start and end (UTC), the serve command; rewritten at every change
    serve.log    what the serve recipe (and the server it runs in the foreground) printed
    *.log        the launcher's logs of servers a recipe started in the background on the cell's port
    batch.sh, job.json, slurm-<job>.out   with --executor slurm (bench.results.matrix_slurm)
The fit check and the points of a cell are worked out here too, from its rendered serve command.
"""

from __future__ import annotations

import json
import re
import shlex
from datetime import UTC, datetime
from pathlib import Path

from bench.results import fitset
from bench.results.matrix_file import CELLS, Cell, Matrix, fill
from bench.results.scenarios import Point, load_set, points, skip_reason
from bench.serve import fit, recipes
from bench.serve.fit import QUEUES, REJECTED, Verdict
from bench.serve.limits import servers

DONE, FAILED, RUNNING, INTERRUPTED = "done", "failed", "running", "interrupted"
TAIL = 20  # lines of the server's log kept with a failed cell


def folder(results: Path, m: Matrix, cell: Cell) -> Path:
    return results / m.name / CELLS / cell.id


def read_state(d: Path) -> dict:
    try:
        s = json.loads((d / "state.json").read_text())
        return s if isinstance(s, dict) else {}
    except (OSError, ValueError):
        return {}


def write_state(d: Path, **changes) -> dict:
    d.mkdir(parents=True, exist_ok=True)
    s = {**read_state(d), **changes, "updated": now()}
    tmp = d / "state.json.tmp"
    tmp.write_text(json.dumps(s, indent=2) + "\n")
    tmp.replace(d / "state.json")  # a reader (--status, another node) never sees half a file
    return s


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def tail(path: Path, lines: int = TAIL) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


# Before it starts


def serve_words(
    cell: Cell, port: int | str, head: str = "127.0.0.1", rank: str = "0"
) -> tuple[list[str], dict[str, str]]:
    """(the recipe's arguments, its environment) with the placeholders filled; PORT and HOST set too, for
    recipes whose port and host default to them."""
    env = {"PORT": str(port), **{k: fill(v, port, head, rank) for k, v in cell.env.items()}}
    return [fill(a, port, head, rank) for a in cell.args], env


def shown(cell: Cell, port: int | str, head: str = "{head}", rank: str = "{rank}") -> str:
    """The serve command as one shell line, e.g. `just cpu-serve 8123 --max-num-seqs 8`."""
    args, env = serve_words(cell, port, head, rank)
    if any("{port}" in a for a in cell.args):
        env.pop("PORT")  # given as an argument already
    prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    return f"{prefix + ' ' if prefix else ''}just {shlex.join([cell.recipe, *args])}"


def planned(cell: Cell, campaign_dir: Path) -> list[Point]:
    """The points of the cell's set its campaign would measure (the cell's skips left out)."""
    out = []
    for s in load_set(Path(cell.scenarios)):
        if not skip_reason(s, cell.skip, [cell.label], None):
            out += points(s, campaign_dir / cell.label)
    return out


def fit_check(cell: Cell, pts: list[Point], port: int) -> tuple[str, list[Verdict], str]:
    """(the rendered engine command, a verdict per point, why none could be given: '' when judged)."""
    args, env = serve_words(cell, port)
    rendered = recipes.render(cell.recipe, args, env)
    if not rendered:
        return "", [], f"just could not render {cell.recipe}'s command, so no fit check was possible"
    engine = re.search(r"bench\.serve\.launcher start .*--engine (\S+)", rendered)  # a launcher line names it
    fleet, _ = servers(rendered, engine.group(1) if engine else None)
    if not fleet:
        return rendered, [], "the command starts no vLLM, SGLang or TensorRT-LLM server, so no fit check"
    return rendered, [fit.judge(fleet, fitset.load(p)) for p in pts], ""


def refused(cell: Cell, verdicts: list[Verdict]) -> str:
    """Why the cell cannot run as planned ('' when it can): points the command would reject or queue."""
    bad = [v for v in verdicts if v.verdict == REJECTED or (v.verdict == QUEUES and not cell.allow_queueing)]
    if not bad:
        return ""
    names = ", ".join(f"{v.load.scenario} {v.load.point}" for v in bad)
    return (
        f"fit check: {names} {bad[0].verdict} ({bad[0].why}); change the recipe's flags in the cell's args, "
        "leave the scenario out with skip, or set allow_queueing = true"
    )


def summary_line(verdicts: list[Verdict]) -> str:
    counts = {}
    for v in verdicts:
        counts[v.verdict] = counts.get(v.verdict, 0) + 1
    return ", ".join(f"{n} {v}" for v, n in counts.items())
