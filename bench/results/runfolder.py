"""A run folder, read: its summary, manifest and records, and every run folder under a tree.

A run folder holds what one load point wrote (bench.instrument writes them, `bench import` too):
summary.json (the numbers), manifest.json (what was measured, where, by whom) and, unless it was
imported from a summary alone, requests.jsonl (one record per request). Report, plot and
campaign read run folders only through here.
"""

from __future__ import annotations

import json
import sys
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

    @property
    def flag(self) -> tuple[str, str] | None:
        """(mark, why) when the run's numbers need a warning beside them; see `flag`."""
        return flag(self.summary)

    def records(self) -> Iterator[Record]:
        return read_records(self.path / REQUESTS)


# Marks beside a run's numbers in tables and plots, worst first.
MARKS = {"failed": "✗", "partial": "†", "some failed": "!"}


def flag(summary: dict) -> tuple[str, str] | None:
    """(mark, why) for a run that failed, was cut short, or lost some requests; None for a clean one.
    Summaries written before verdicts existed are judged by `partial` and `completed`."""
    verdict = summary.get("verdict") or {}
    status = verdict.get("status")
    if status is None:
        status = "partial" if summary.get("partial") else "ok" if summary.get("completed") else "failed"
    reasons = "; ".join(verdict.get("reasons") or []) or {"failed": "no request completed"}.get(status, "")
    if status in ("failed", "partial"):
        return MARKS[status], f"{status}: {reasons or 'the run was interrupted'}"
    failed, completed = summary.get("failed") or 0, summary.get("completed") or 0
    if failed:
        kinds = ", ".join(f"{k} {n}" for k, n in (summary.get("errors_by_kind") or {}).items())
        return MARKS["some failed"], f"{failed} of {failed + completed} requests failed" + (
            f" ({kinds})" if kinds else ""
        )
    return None


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


def scan(tree: str | Path) -> tuple[list[Run], list[tuple[Path, str]]]:
    """Every run folder under `tree`, labelled as the contract says (manifest first), and every
    folder that looks like one but cannot be read, with why."""
    runs, skipped = [], []
    folders = {f.parent for name in (SUMMARY, MANIFEST, REQUESTS) for f in Path(tree).rglob(name)}
    for d in sorted(folders):
        if ".aside-" in d.name:
            skipped.append((d, "set aside by a campaign: an earlier partial or failed attempt at this point"))
            continue
        if not (d / SUMMARY).is_file():
            why = "no summary.json: the run ended without writing one (killed?)"
            skipped.append((d, why + (f"; rebuild it with `bench summarize {d}`" if (d / REQUESTS).is_file() else "")))
            continue
        if not (d / MANIFEST).is_file():
            skipped.append((d, "no manifest.json: nothing says what was measured"))
            continue
        try:
            runs.append(_run(d))
        except UserError as e:
            skipped.append((d, str(e)))
    return runs, skipped


def _run(d: Path) -> Run:
    m = read_json(d / MANIFEST)
    server, camp, wl = m.get("server") or {}, m.get("campaign") or {}, m.get("workload") or {}
    up = list(d.parents)
    if wl.get("input_len") and wl.get("output_len"):
        scen = f"{wl['input_len']}-{wl['output_len']}"
    else:
        scen = wl.get("dataset") or d.parent.name
    return Run(
        path=d,
        summary=read_json(d / SUMMARY),
        manifest=m,
        campaign=camp.get("name") or (up[2].name if len(up) > 2 else d.name),
        engine=server.get("label") or server.get("engine") or (up[1].name if len(up) > 1 else d.name),
        scenario=camp.get("scenario") or scen,
        load_point=camp.get("load_point") or d.name,
    )


def find_runs(tree: str | Path) -> list[Run]:
    """Every readable run folder under `tree`."""
    return scan(tree)[0]


def runs_under(tree: str | Path, shown: str | Path | None = None) -> list[Run]:
    """The runs under `tree`, each folder skipped named on stderr with why; one sentence when `tree`
    (`shown` in messages) is no folder or holds no readable run."""
    shown = tree if shown is None else shown
    if not Path(tree).is_dir():
        raise UserError(f"{shown} is not a folder; give the results tree, e.g. results/.")
    runs, skipped = scan(tree)
    for folder, why in skipped:
        print(f"skipped {folder}: {why}", file=sys.stderr)
    if not runs:
        raise UserError(
            f"no readable run folders (summary.json + manifest.json) under {shown}"
            + (f" ({len(skipped)} skipped, see above)" if skipped else "")
            + "; make some with `bench run`, `just bench` or `bench import`."
        )
    return runs
