"""Matrix files (recipes/matrices/*.toml): engine layouts x scenario sets, read and checked before
anything starts. recipes/matrices/demo.toml explains every key.

A file holds [[cell]] tables; top-level keys other than `name` and `description` are defaults for
every cell (as in scenario sets). A cell whose `scenarios` lists several sets becomes one cell per
set: that is the grid (layouts x sets). Each cell's id, `<label>.<set>`, names its folder under
<results>/<matrix>/cells/; its runs land in <results>/<matrix>/<label>/<scenario>/<load-point>/, one
campaign, so one `bench report` compares every cell. Every mistake is one sentence naming the cell
and the key.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from bench.errors import UserError
from bench.results.scenarios import NAME, find_set, load_set
from bench.serve import recipes

MATRIX_DIR = Path(__file__).resolve().parents[2] / "recipes" / "matrices"
PLACEHOLDERS = ("port", "head", "rank")  # filled in when the cell starts: its free port, first node, node rank
CELLS = "cells"  # <results>/<matrix>/cells/<cell id>/: state, server log, batch script


@dataclass
class Cell:
    label: str  # engine label: the results folder the report compares by
    recipe: str  # serve recipe in the justfile, e.g. cpu-serve, sgl-serve-dp
    scenarios: str = "demo"  # scenario set: a name in recipes/scenarios/ or a .toml path (a list: one cell per set)
    args: list = field(default_factory=list)  # recipe arguments; {port}, {head}, {rank} filled in at start
    env: dict = field(default_factory=dict)  # environment for the recipe, same placeholders
    stop: str = ""  # stop recipe and its arguments: set for serve recipes that return once the server is up
    ready_path: str = "/health"  # answers 200 once the server is ready
    timeout: float = 3600  # seconds the server may take to become ready
    model: str = ""  # served model name; default: the server's only one
    dataset_path: str = ""  # file for scenarios that read one (ShareGPT)
    skip: list = field(default_factory=list)  # scenarios of the set to leave out (names or globs)
    warmup: int = 2  # requests sent first at every load point and left out (bench run --warmup)
    warmup_sweep: bool = False  # also run the first sweep once beforehand and ignore it (JIT-compiling engines)
    pause: float = 5  # seconds between load points
    allow_queueing: bool = False  # measure points the serve command would queue, on purpose
    run_args: str = ""  # more `bench run` flags for every point
    # Slurm (--executor slurm)
    nodes: int = 1  # nodes the cell's job takes
    per_node: bool = False  # start the recipe once on every node through srun ({rank} differs); else once
    gpus: int = 0  # GPUs per node the job asks for (--gpus-per-node)
    time: str = "02:00:00"  # the job's time limit
    partition: str = ""
    account: str = ""
    constraint: str = ""
    exclusive: bool = True  # the job has its nodes alone (a benchmark shares nothing)
    sbatch_args: list = field(default_factory=list)  # more sbatch options, e.g. ["--qos=high"]

    @property
    def set_name(self) -> str:
        return Path(self.scenarios).stem

    @property
    def id(self) -> str:
        return f"{self.label}.{self.set_name}"


@dataclass
class Matrix:
    name: str  # campaign folder under the results root
    path: Path
    description: str
    cells: list[Cell]


KEYS = {f.name: f for f in fields(Cell)}
TYPES = {"label": str, "recipe": str, "args": list, "env": dict, "stop": str, "ready_path": str, "timeout": float}
TYPES |= {"model": str, "skip": list, "warmup": int, "warmup_sweep": bool, "pause": float, "allow_queueing": bool}
TYPES |= {"run_args": str, "nodes": int, "per_node": bool, "gpus": int, "time": str, "partition": str}
TYPES |= {
    "dataset_path": str,
    "account": str,
    "constraint": str,
    "exclusive": bool,
    "sbatch_args": list,
    "scenarios": str,
}


def find_matrix(spec: str) -> Path:
    path = Path(spec) if spec.endswith(".toml") or "/" in spec else MATRIX_DIR / f"{spec}.toml"
    if not path.is_file():
        names = ", ".join(sorted(p.stem for p in MATRIX_DIR.glob("*.toml")))
        raise UserError(f"no matrix file {spec!r}; give a .toml file or one of recipes/matrices/: {names}")
    return path.resolve()


def load_matrix(spec: str) -> Matrix:
    path = find_matrix(spec)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise UserError(f"cannot read matrix file {path}: {e}") from None
    name = data.pop("name", path.stem)
    description = data.pop("description", "")
    entries = data.pop("cell", None)
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise UserError(f"{path}: name {name!r} names a folder: use letters, digits, '.', '_' or '-'")
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        raise UserError(f"{path} has no [[cell]] tables; add one per serve recipe (see recipes/matrices/demo.toml)")
    cells = []
    for i, entry in enumerate(entries, 1):
        cells += expand({**data, **entry}, f"{path.name}, cell {i}")
    ids = [c.id for c in cells]
    if dup := sorted({x for x in ids if ids.count(x) > 1}):
        raise UserError(f"{path}: more than one cell is {', '.join(dup)} (label.set); give each a label of its own")
    return Matrix(name, path, description, cells)


def expand(raw: dict, where: str) -> list[Cell]:
    """One cell per scenario set the entry lists, each checked."""
    label = raw.get("label")
    if isinstance(label, str):
        where += f" ({label})"
    if unknown := sorted(set(raw) - set(KEYS)):
        raise UserError(f"{where}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(KEYS))}")
    for key in ("label", "recipe"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise UserError(f'{where}: needs {key} = "..." (see recipes/matrices/demo.toml)')
    sets = raw.get("scenarios", Cell.scenarios)
    sets = sets if isinstance(sets, list) else [sets]
    if not sets:
        raise UserError(f'{where}: scenarios lists no set; give at least one (e.g. scenarios = "demo")')
    return [check(Cell(**{**raw, "scenarios": s}), where) for s in sets]


def _typed(value, kind) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, kind) and (kind is bool or not isinstance(value, bool))


def check(cell: Cell, where: str) -> Cell:
    for key, kind in TYPES.items():
        if not _typed(getattr(cell, key), kind):
            raise UserError(f"{where}: {key} must be {'a number' if kind is float else kind.__name__}")
    if not NAME.fullmatch(cell.label) or cell.label == CELLS:
        raise UserError(f"{where}: label {cell.label!r} names a folder: use letters, digits, '.', '_' or '-'")
    try:
        path = find_set(cell.scenarios)
        load_set(path)
    except UserError as e:
        raise UserError(f"{where}: {e}") from None
    cell.scenarios = str(path)
    recipe = recipes.find(cell.recipe)
    if recipe is None:
        raise UserError(f"{where}: there is no serve recipe {cell.recipe!r} in the justfile; `just --list` shows them")
    words = [*cell.args, *cell.env.values(), cell.stop]
    if not all(isinstance(w, str) for w in words):
        raise UserError(f'{where}: args, env values and stop are strings; quote numbers ("{{port}}", "8")')
    if bad := sorted({m for w in words for m in re.findall(r"\{(\w*)\}", w)} - set(PLACEHOLDERS)):
        raise UserError(f"{where}: unknown placeholder {{{bad[0]}}}; use {', '.join(f'{{{p}}}' for p in PLACEHOLDERS)}")
    if not any("{port}" in w for w in words) and not recipe.port_from_env:
        raise UserError(
            f'{where}: {cell.recipe} takes its port as an argument: put "{{port}}" in args, where the recipe '
            "expects the port, so every cell gets a free one"
        )
    if cell.stop and (stop := cell.stop.split()[0]) and recipes.find(stop) is None:
        raise UserError(f"{where}: stop names {stop!r}, which is no recipe in the justfile; `just --list` shows them")
    for key in ("nodes", "timeout"):
        if getattr(cell, key) <= 0:
            raise UserError(f"{where}: {key} must be above 0")
    if cell.gpus < 0 or cell.warmup < 0 or cell.pause < 0:
        raise UserError(f"{where}: gpus, warmup and pause cannot be negative")
    if cell.per_node and cell.stop:
        raise UserError(f"{where}: per_node starts the recipe through srun, which stays up: leave stop out")
    return cell


def fill(word: str, port: int, head: str = "127.0.0.1", rank: str = "0") -> str:
    return word.replace("{port}", str(port)).replace("{head}", head).replace("{rank}", rank)
