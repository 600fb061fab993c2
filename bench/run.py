"""`bench run`: measure one load point and write a run folder.

The command's part only: flags to a RunSpec (bench.instrument.spec), the optional self-check
against the calibration server (bench.lab.selfcheck), then `measure(spec)` and the tables.
"""

from __future__ import annotations

import argparse
import sys

from bench.instrument import metrics, spec
from bench.instrument.measure import measure


def add_arguments(p: argparse.ArgumentParser) -> None:
    spec.add_arguments(p)


def self_check(run: spec.RunSpec) -> dict:
    """This client's error bar at the run's concurrency, said on the terminal and kept."""
    from bench.lab import selfcheck

    check = selfcheck.self_check(run.concurrency or 64, run.api)
    print(selfcheck.describe(check), file=sys.stderr)
    return check


def main(args: argparse.Namespace) -> int:
    run = spec.from_args(args, args.argv)
    result = measure(run, self_check if run.self_check else None)
    summary = result.summary
    print(metrics.format_summary(summary))
    if summary["client_cpu_ms_per_1k_chunks"] is not None:
        print(
            f"client CPU while sending: {summary['client_cpu_ms_per_1k_chunks']:.1f} ms per 1,000 chunks",
            file=sys.stderr,
        )
    print(f"run folder: {result.out}", file=sys.stderr)
    return 130 if result.partial else 0
