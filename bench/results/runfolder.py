"""A run folder, read: its summary, manifest and records, and every run folder under a tree.

A run folder holds what one load point wrote (bench.instrument writes them, `bench import` too):
summary.json (the numbers), manifest.json (what was measured, where, by whom) and, unless it was
imported from a summary alone, requests.jsonl (one record per request). Report, plot and
campaign read run folders only through here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.errors import UserError
from bench.instrument.records import Record, read_records

SUMMARY, MANIFEST, REQUESTS = "summary.json", "manifest.json", "requests.jsonl"


@dataclass
class Run:
    path: Path
    campaign: str
    engine: str
    scenario: str
    load_point: str
    summary: dict
    manifest: dict

    def has_records(self) -> bool:
        return (self.path / REQUESTS).is_file()

    def records(self) -> Iterator[Record]:
        return read_records(self.path / REQUESTS)


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {path} ({e}); fix or remove that run folder.") from None


def summary(folder: Path) -> dict:
    return read_json(folder / SUMMARY)


def state(folder: Path) -> str:
    """'new', 'done', or why an existing folder must be measured again: 'partial' or 'failed'."""
    if not folder.exists():
        return "new"
    try:
        s = summary(folder)
    except UserError:  # a run that died before (or while) writing its summary
        return "failed"
    if s.get("partial"):
        return "partial"
    failed = (s.get("verdict") or {}).get("status") == "failed"  # summaries before verdicts: none completed
    return "failed" if failed or not s.get("completed") else "done"


def find_runs(tree: str | Path) -> list[Run]:
    """Every run folder under `tree`, labelled as the contract says (manifest first)."""
    runs = []
    for s in sorted(Path(tree).rglob(SUMMARY)):
        d = s.parent
        if ".aside-" in d.name or not (d / MANIFEST).is_file():
            continue  # a campaign sets failed or partial points aside as <load>.aside-N
        m = read_json(d / MANIFEST)
        server, camp, wl = m.get("server") or {}, m.get("campaign") or {}, m.get("workload") or {}
        up = list(d.parents)
        if wl.get("input_len") and wl.get("output_len"):
            scen = f"{wl['input_len']}-{wl['output_len']}"
        else:
            scen = wl.get("dataset") or d.parent.name
        runs.append(
            Run(
                path=d,
                summary=read_json(s),
                manifest=m,
                campaign=camp.get("name") or (up[2].name if len(up) > 2 else d.name),
                engine=server.get("label") or server.get("engine") or (up[1].name if len(up) > 1 else d.name),
                scenario=camp.get("scenario") or scen,
                load_point=camp.get("load_point") or d.name,
            )
        )
    return runs


def runs_under(tree: str | Path, shown: str | Path | None = None) -> list[Run]:
    """find_runs(tree), or one sentence when `tree` (`shown` in messages) is no folder or holds no run."""
    shown = tree if shown is None else shown
    if not Path(tree).is_dir():
        raise UserError(f"{shown} is not a folder; give the results tree, e.g. results/.")
    if not (runs := find_runs(tree)):
        raise UserError(
            f"no run folders (summary.json + manifest.json) under {shown}; "
            "make some with `bench run`, `just bench` or `bench import`."
        )
    return runs
