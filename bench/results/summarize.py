"""`bench summarize`: rebuild a run's summary.json from its requests.jsonl and manifest.

For a run that ended without writing its summary (kill -9, power loss, a crash): every request
that finished is in requests.jsonl, appended and flushed as it ended, and the manifest was
written before the load began. The rebuilt summary is marked partial, since the run did not end
by itself, and says it was rebuilt; the client's own CPU cost is unknown. An existing summary is
kept unless --force, and then moved aside, never overwritten.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bench.errors import UserError
from bench.instrument import checks, energy, manifest, metrics, session_metrics, steady, verdict, workers
from bench.instrument.records import read_records
from bench.results.runfolder import MANIFEST, REQUESTS, SUMMARY, read_json

REBUILT = "rebuilt by `bench summarize` from requests.jsonl: the run ended without writing its summary"


def add_arguments(p) -> None:
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="Run folders whose summary.json to rebuild.")
    p.add_argument(
        "--force",
        action="store_true",
        help="Rebuild a summary that exists too (the old one is kept as summary.json.before-N).",
    )


def rebuild(folder: Path, force: bool = False) -> dict:
    """Write the folder's summary.json again from its records; the summary."""
    if not (folder / REQUESTS).is_file() and not (folder / "workers").is_dir():
        raise UserError(f"{folder} has no requests.jsonl to summarise; give a run folder of `bench run`")
    man = read_json(folder / MANIFEST) if (folder / MANIFEST).is_file() else None
    if man is None:
        raise UserError(f"{folder} has no manifest.json, so nothing says what was measured; it cannot be summarised")
    out = folder / SUMMARY
    if out.exists():
        if not force:
            raise UserError(f"{out} exists; pass --force to rebuild it (the old one is kept beside it)")
        n = 1
        while (aside := out.with_name(f"{SUMMARY}.before-{n}")).exists():
            n += 1
        out.rename(aside)
    if (folder / "workers").is_dir():  # several workers' records, never merged: the run was killed first
        workers.merge(folder)
    records = list(read_records(folder / REQUESTS))
    summary = metrics.summarise(records, gpu_count=man.get("gpu_count"))
    summary.update(session_metrics.summarise(records))
    client = {"client_cpu_s": None, "client_encode_cpu_s": None, "client_cpu_ms_per_1k_chunks": None}
    summary.update(partial=True, rebuilt=REBUILT, **client)
    summary["verdict"] = verdict.judge(summary, (man.get("load") or {}).get("min_success", 0.99))
    summary["notes"] = verdict.notes(summary)
    t0 = (man.get("clock") or {}).get("t0_perf_counter") or 0.0
    summary.update(energy.for_run(folder / "gpu.jsonl", records, summary, t0))  # nothing without gpu.jsonl
    summary["notes"] += summary.pop("gpu_notes", [])
    if rule := (man.get("load") or {}).get("until_steady"):  # the killed run's intervals, up to its last send
        closed = (man.get("load") or {}).get("rate") is None
        summary["steady"] = {"stopped_by": "interrupted"} | steady.judge(
            records, rule["ci_target"], rule["min_requests"], closed=closed
        )
    summary["checks"] = checks.run_checks(records, checks.read_server(folder / "server.jsonl"), man, summary)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    man["partial"] = True
    manifest.write(folder / MANIFEST, man)
    return summary


def main(args) -> int:
    for folder in map(Path, args.runs):
        s = rebuild(folder, args.force)
        print(
            f"{folder}: {s['completed']} completed, {s['failed']} failed, {s['interrupted']} interrupted; "
            f"verdict {s['verdict']['status']}",
            file=sys.stderr,
        )
    return 0
