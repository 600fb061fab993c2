"""`bench check`: the checks of existing runs, recomputed from their records and server.jsonl.

For runs measured before checks existed, or to see them again: each run folder's checks are
computed as `bench run` computes them (bench.instrument.checks) and printed as a table; with
--write they are stored in its summary.json too. Exit 1 when any check fails.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.errors import UserError
from bench.instrument.checks import read_server, run_checks
from bench.results.runfolder import MANIFEST, REQUESTS, SUMMARY, read_json

SERVER = "server.jsonl"


def add_arguments(p) -> None:
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="Run folders to check.")
    p.add_argument("--write", action="store_true", help="Also store the checks in each run's summary.json.")
    p.add_argument("--fmt", default="simple", help="tabulate table format, e.g. simple, github.")


def checks_of(folder: Path) -> list[dict]:
    """The checks of one run folder, from its files alone."""
    for name in (REQUESTS, MANIFEST, SUMMARY):
        if not (folder / name).is_file():
            raise UserError(f"{folder} has no {name}; give a run folder written by `bench run`")
    from bench.instrument.records import read_records

    records = list(read_records(folder / REQUESTS))
    return run_checks(records, read_server(folder / SERVER), read_json(folder / MANIFEST), read_json(folder / SUMMARY))


def main(args) -> int:
    from tabulate import tabulate

    failed = False
    for folder in map(Path, args.runs):
        checks = checks_of(folder)
        rows = [[c["check"], c["status"], c["why"]] for c in checks]
        print(f"{folder}\n" + tabulate(rows, headers=["check", "status", "what it says"], tablefmt=args.fmt) + "\n")
        failed |= any(c["status"] == "fail" for c in checks)
        if args.write:
            summary = read_json(folder / SUMMARY)
            summary["checks"] = checks
            (folder / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    return 1 if failed else 0
