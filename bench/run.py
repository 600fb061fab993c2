"""`bench run`: measure one load point and write a run folder.

The command's part only: flags to a RunSpec (bench.instrument.spec), `measure(spec)` with the
optional self-check against the calibration server (bench.lab.selfcheck), then the tables.
"""

from __future__ import annotations

import argparse
import sys

from bench.instrument import metrics, run_flags, session_metrics, spec
from bench.instrument.measure import measure


def add_arguments(p: argparse.ArgumentParser) -> None:
    run_flags.add_arguments(p)


def main(args: argparse.Namespace) -> int:
    run = spec.from_args(args, args.argv)
    check = None
    if run.self_check:
        from bench.lab import selfcheck

        check = selfcheck.for_run
    result = measure(run, check)
    summary = result.summary
    if not result.manifest["server"]["model_given"]:
        print(f"model: {result.manifest['server']['model']}, the only one the server serves", file=sys.stderr)
    print(metrics.format_summary(summary))
    if summary.get("per_turn"):
        print("\n" + session_metrics.format_turns(summary))
    if summary["client_cpu_ms_per_1k_chunks"] is not None:
        print(
            f"client CPU while sending: {summary['client_cpu_ms_per_1k_chunks']:.1f} ms per 1,000 chunks",
            file=sys.stderr,
        )
    if (sampler := summary.get("gpu_sampler")) and sampler.get("cpu_percent") is not None:
        print(
            f"GPU sampler ({sampler['source']}, {sampler['samples']} samples): "
            f"{sampler['cpu_percent']:.2f} % of one core",
            file=sys.stderr,
        )
    fleet = summary["workers"]
    if fleet["count"] > 1:
        print(f"client: {fleet['count']} worker processes ({fleet['why']})", file=sys.stderr)
    if st := summary.get("steady"):  # --until-steady: why it stopped, and how well the point is known
        iv = st["intervals"]
        known = ", ".join(f"{k} +-{v['rel']:.1%}" for k, v in iv.items() if v) or "no intervals yet"
        print(f"stopped by {st['stopped_by']} after {st['measured']} requests; {known} (95 %)", file=sys.stderr)
    for note in summary["notes"]:
        print(f"note: {note}", file=sys.stderr)
    for c in summary.get("checks") or []:  # the doubts; `bench check RUN` prints every check
        if c["status"] != "pass":
            print(f"check {c['check']} {c['status']}: {c['why']}", file=sys.stderr)
    verdict = summary["verdict"]
    if verdict["status"] != "ok":
        print(f"run {verdict['status']}: {'; '.join(verdict['reasons'])}", file=sys.stderr)
    print(f"run folder: {result.out}", file=sys.stderr)
    return exit_code(result)


def exit_code(result) -> int:
    """128 + the signal that interrupted the run (130 Ctrl-C, 143 SIGTERM), 1 when it failed, else 0."""
    if result.signal:
        return 128 + result.signal
    return 1 if result.summary["verdict"]["status"] == "failed" else 0
