"""Scenario sets: TOML files of workloads and load points, read and checked before any load.

A set lives in recipes/scenarios/<name>.toml (the keys are explained in demo.toml). Top-level
keys other than `description` are defaults for every [[scenario]] table. Each scenario expands
to load points: its concurrency list (closed loop), then its rates (open loop, capped by
max_concurrency), each with max(num_prompts, prompts_per_concurrency x concurrency) requests.
"""

from __future__ import annotations

import fnmatch
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from bench.errors import UserError
from bench.instrument import sessions, traces
from bench.paths import SCENARIO_DIR

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # safe as a folder name
DATASETS = (None, "sharegpt", "jsonl", *sessions.DATASETS, *traces.FORMATS)
TRACES = traces.FORMATS  # one load point: the trace's own times


@dataclass
class Scenario:
    name: str
    input_len: int | None = None
    output_len: int | None = None
    dataset: str | None = None
    dataset_path: str | None = None
    range_ratio: float = 0.0
    concurrency: list = field(default_factory=list)
    rates: list = field(default_factory=list)
    max_concurrency: int | None = None
    num_prompts: int = 100
    prompts_per_concurrency: float = 0
    skip: list = field(default_factory=list)
    turns: str | None = None  # sessions: turns per conversation, a distribution (bench run --turns)
    think_time: str | None = None  # sessions: seconds between an answer and the next turn (--think-time)
    time_scale: float = 1.0  # trace replay: the recorded gaps multiplied by this (--time-scale)


@dataclass
class Point:
    scenario: Scenario
    name: str  # load-point folder name: c8, r10, r10-c64
    concurrency: int | None
    rate: float | None
    num_prompts: int
    out: Path
    run_args: list = field(default_factory=list)  # `bench run` flags of this point alone (adaptive: --until-steady)


def find_set(spec: str) -> Path:
    path = Path(spec) if spec.endswith(".toml") or "/" in spec else SCENARIO_DIR / f"{spec}.toml"
    if not path.is_file():
        names = ", ".join(sorted(p.stem for p in SCENARIO_DIR.glob("*.toml")))
        raise UserError(f"unknown scenario set {spec!r}; pick one of: {names}, or give an existing .toml file")
    return path


def load_set(path: Path) -> list[Scenario]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise UserError(f"cannot read scenario file {path}: {e}") from None
    entries = data.get("scenario")
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        raise UserError(f"{path} has no [[scenario]] tables; add at least one")
    defaults = {k: v for k, v in data.items() if k not in ("description", "scenario")}
    scenarios = [_scenario({**defaults, **entry}, f"{path}, scenario {i}") for i, entry in enumerate(entries, 1)]
    names = [s.name for s in scenarios]
    if dup := {n for n in names if names.count(n) > 1}:
        raise UserError(f"{path}: more than one scenario is named {', '.join(sorted(dup))}; names must be unique")
    return scenarios


def _count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _distribution(text) -> bool:
    from bench.instrument.sessions import Dist

    if text is None:
        return True
    try:
        return isinstance(text, str) and Dist.parse(text, "") is not None
    except UserError:
        return False


def _scenario(raw: dict, where: str) -> Scenario:
    known = set(Scenario.__dataclass_fields__)
    if set(raw) - known:
        raise UserError(
            f"{where}: unknown key(s) {', '.join(sorted(set(raw) - known))}; known keys: {', '.join(sorted(known))}"
        )
    if not isinstance(raw.get("name"), str) or not NAME.fullmatch(raw["name"]):
        raise UserError(f"{where}: needs a name made of letters, digits, '.', '_' or '-'")
    s = Scenario(**raw)
    for ok, what in [
        (s.dataset in DATASETS, f"dataset must be one of {', '.join(map(str, DATASETS[1:]))} (or absent for random)"),
        (
            s.dataset not in (None, "sessions") or (_count(s.input_len) and _count(s.output_len)),
            "random prompts and synthetic sessions need input_len and output_len",
        ),
        (s.output_len is None or _count(s.output_len), "output_len must be a positive integer"),
        (isinstance(s.concurrency, list) and all(map(_count, s.concurrency)), "concurrency must list positive ints"),
        (isinstance(s.rates, list) and all(_number(r) and r > 0 for r in s.rates), "rates must list positive req/s"),
        (s.concurrency or s.rates or s.dataset in TRACES, "give at least one load point in concurrency or rates"),
        (s.dataset not in TRACES or not s.rates, "a trace sets its own times: give no rates (time_scale instead)"),
        (_number(s.time_scale) and s.time_scale > 0, "time_scale must be a positive number"),
        (all(_distribution(d) for d in (s.turns, s.think_time)), "turns and think_time must be N, A:B or exp:MEAN"),
        (s.max_concurrency is None or _count(s.max_concurrency), "max_concurrency must be a positive integer"),
        (_count(s.num_prompts), "num_prompts must be a positive integer"),
        (_number(s.prompts_per_concurrency) and s.prompts_per_concurrency >= 0, "prompts_per_concurrency must be >= 0"),
        (_number(s.range_ratio) and 0 <= s.range_ratio < 1, "range_ratio must be in [0, 1)"),
        (isinstance(s.skip, list) and all(isinstance(x, str) for x in s.skip), "skip must list engine labels"),
    ]:
        if not ok:
            raise UserError(f"{where} ({s.name}): {what}")
    return s


def points(s: Scenario, folder: Path) -> list[Point]:
    """Closed-loop points first, then open-loop ones, in the order the file lists them."""
    from bench.instrument.schedule import load_point_name

    loads = [(c, None) for c in s.concurrency] + [(s.max_concurrency, float(r)) for r in s.rates]
    if s.dataset in TRACES:
        name = f"replay-x{s.time_scale:g}" + (f"-c{s.max_concurrency}" if s.max_concurrency else "")
        return [Point(s, name, s.max_concurrency, None, s.num_prompts, folder / s.name / name)]
    return [
        Point(
            s,
            load_point_name(c, r),
            c,
            r,
            max(s.num_prompts, math.ceil(s.prompts_per_concurrency * (c or 0))),
            folder / s.name / load_point_name(c, r),
        )
        for c, r in loads
    ]


def skip_reason(s: Scenario, skips: list[str], engines: list[str], max_len: int | None) -> str | None:
    if hit := next((p for p in skips if fnmatch.fnmatchcase(s.name, p)), None):
        return f"--skip {hit}"
    if hit := next((p for p in s.skip if any(fnmatch.fnmatchcase(e, p) for e in engines)), None):
        return f"the scenario's skip list has {hit!r}"
    need = (s.input_len + s.output_len) * (1 + s.range_ratio) if s.input_len and s.output_len else 0
    return f"needs {need:.0f} tokens, the model allows {max_len}" if max_len and need > max_len else None
