"""The project's serve recipes as data, read from `just --dump --dump-format json`: which exist, what
parameters they take, and the command one would run, rendered without starting anything.

A matrix (bench.results.matrix_file) names recipes by name; this is how it checks them before any
server starts, and how its dry run and fit check see the exact engine command:
- a recipe that reads PRINT (the vLLM, SGLang and TensorRT-LLM ones, through their private helper
  recipes) prints its command with `PRINT=1 just RECIPE ARGS` and stops;
- any other (e.g. `cpu-serve`, whose body is one launcher line) is shown by `just --dry-run --no-deps`,
  which prints its lines with every variable filled in and runs none.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from bench.errors import UserError
from bench.paths import ROOT

JUSTFILE = ROOT / "justfile"


def just_executable() -> str:
    """The project's own `just` (installed in .venv by pip), else the one on PATH."""
    own = ROOT / ".venv" / "bin" / "just"
    return str(own) if own.exists() else "just"


@dataclass(frozen=True)
class Recipe:
    name: str
    parameters: tuple[str, ...]  # in order; a variadic one (*extra) last
    variadic: bool  # the last parameter takes any number of words
    port_from_env: bool  # its port parameter defaults to PORT, so the environment can set it
    prints: bool  # it (or a recipe it depends on) reads PRINT: PRINT=1 prints the command and stops


def _reads_print(name: str, recipes: dict, seen: set[str]) -> bool:
    if name in seen or name not in recipes:
        return False
    seen.add(name)
    r = recipes[name]
    if "['variable', 'PRINT']" in str(r.get("body")) + str(r.get("dependencies")):
        return True
    return any(_reads_print(d["recipe"], recipes, seen) for d in r.get("dependencies") or [])


@cache
def all_recipes() -> dict[str, Recipe]:
    """Every recipe of the project's justfile, by name."""
    try:
        out = subprocess.run(
            [just_executable(), "--justfile", str(JUSTFILE), "--dump", "--dump-format", "json"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        why = f"cannot read the recipes of {JUSTFILE} with just: {e}"
        raise UserError(f"{why}; install just with `pip install -e .`") from None
    raw = json.loads(out)["recipes"]
    recipes = {}
    for name, r in raw.items():
        params = r.get("parameters") or []
        port = next((p for p in params if p["name"] == "port"), None)
        recipes[name] = Recipe(
            name=name,
            parameters=tuple(p["name"] for p in params),
            variadic=bool(params) and params[-1]["kind"] in ("star", "plus"),
            port_from_env=bool(port) and port.get("default") == ["variable", "PORT"],
            prints=_reads_print(name, raw, set()),
        )
    return recipes


def find(name: str) -> Recipe | None:
    r = all_recipes().get(name)
    return None if r is None or name.startswith("_") else r  # private helpers are not served by name


def command(recipe: str, args: list[str]) -> list[str]:
    """The words that run the recipe from any folder."""
    return [just_executable(), "--justfile", str(JUSTFILE), recipe, *args]


def render(recipe: str, args: list[str], env: dict[str, str]) -> str:
    """The command the recipe would run (one line per process of a layout), started by nothing; ''
    when just cannot render it (a recipe that refuses its arguments says why on stderr, kept out)."""
    r = find(recipe)
    if r is None:
        return ""
    full_env = {**os.environ, **env}
    if r.prints:
        words, full_env["PRINT"] = command(recipe, args), "1"
    else:
        words = [just_executable(), "--justfile", str(JUSTFILE), "--dry-run", "--no-deps", recipe, *args]
    done = subprocess.run(words, capture_output=True, text=True, env=full_env, cwd=Path(ROOT))
    if done.returncode:
        return ""
    return (done.stdout if r.prints else done.stderr).strip()
