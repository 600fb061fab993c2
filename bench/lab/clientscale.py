"""The scale table of `just bench-client`: this client at thousands of streams, on many cores.

For each concurrency C: the calibration server on S processes sharing its port (cores 0..S-1,
one each), `bench run --workers W` on the next W cores, a closed loop of C streams for `rounds`
requests each (128 output tokens, true TTFT 50 ms, one token every 20 ms: C x 49 chunks/s
offered; with --ramp-up, the span it adds counts in what is offered). Per row: our first-chunk
stamp error against the server's logged send (p99), the chunk-ITL p99 error, the share of the
offered throughput we measured, the client's CPU per
1,000 chunks while sending, our send lag p99, chunks stamped over 1 ms after the server sent
them, and the server's own lateness (p99), so a server that fell behind shows as such.

    python -m bench.lab.clientscale --concurrency 1024 4096 8192 --workers 1 4 8 --server-processes 2 6 8

A benchmark, not a test: it prints the table and writes it to results/bench-client/scale-<time>/.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
from tabulate import tabulate

from bench.errors import UserError, exit_status
from bench.instrument.records import Record, read_records
from bench.lab import accuracy
from bench.lab.calibration import read_log, send_lag_stats, start_server, stop_server
from bench.paths import ROOT, TINY_MODEL

TTFT_MS, ITL_MS, OUTPUT_LEN, INPUT_LEN = 50.0, 20.0, 128, 64


def per_concurrency(values: list[int], concurrencies: list[int], flag: str) -> list[int]:
    """One value for every concurrency, or one each."""
    if len(values) == 1:
        return values * len(concurrencies)
    if len(values) != len(concurrencies):
        raise UserError(f"{flag} takes one value or one per --concurrency value ({len(concurrencies)})")
    return values


def plan(concurrencies: list[int], workers: list[int], servers: list[int]) -> tuple[list[int], list[int]]:
    """Client workers and server processes for each concurrency, checked against the cores here."""
    workers = per_concurrency(workers, concurrencies, "--workers")
    servers = per_concurrency(servers, concurrencies, "--server-processes")
    cores = len(os.sched_getaffinity(0))
    for c, w, s in zip(concurrencies, workers, servers):
        if w + s > cores:
            raise UserError(
                f"C={c} needs {w} + {s} cores, this host lets us use {cores}; lower --workers or --server-processes"
            )
    return workers, servers


def offered_throughput(c: int, rounds: int, ramp: float) -> float:
    """Output tokens/s that a client and server keeping perfect time would measure: every token the
    schedule asks for, over the span from the first send to the last token, the ramp-up's (its last
    stream starts ramp x (C - 1) / C in) included; without one, C streams' rate."""
    stream_s = (TTFT_MS + (OUTPUT_LEN - 1) * ITL_MS) / 1e3
    return c * rounds * OUTPUT_LEN / (ramp * (c - 1) / c + rounds * stream_s)


def stamp_errors(out: Path, records: list[Record], entries: dict[str, dict]) -> tuple[np.ndarray, int]:
    """Per request, first-chunk stamp minus the server's logged send (ms); and the chunks stamped
    over 1 ms after the server sent them (two chunks read together show here first)."""
    t0 = json.loads((out / "manifest.json").read_text())["clock"]["t0_perf_counter"]
    sent = {int(rid.rsplit("-", 1)[1]): e["sent"] for rid, e in entries.items() if rid.startswith("bench-")}
    first, late = [], 0
    for r in records:
        if r.ok and not r.warmup and r.id in sent and r.chunk_times:
            err = t0 + np.asarray(r.chunk_times) - np.asarray(sent[r.id][: len(r.chunk_times)])
            first.append(err[0] * 1e3)
            late += int(np.count_nonzero(err > 1e-3))
    return np.asarray(first), late


def later_send_lag_p99(records: list[Record], c: int) -> float | None:
    """Send lag p99 (ms) of the requests after each stream's first: those are due when a stream
    frees, while the first round's are all due at the start (or over --ramp-up), so its lag is how
    long the client takes to send C requests from a standing start."""
    lags = [r.sent - r.scheduled for r in records if not r.warmup and r.id >= c]
    return float(np.percentile(lags, 99)) * 1e3 if lags else None


def row(
    c: int, workers: int, servers: int, rounds: int, work: Path, client: Path | None = None, ramp: float = 0.0
) -> dict:
    """One concurrency: a fresh server fleet, one client run, its errors against the server's log;
    `client`: run the client from that checkout instead (a before/after comparison on one host);
    `ramp`: the streams start over this many seconds (--ramp-up)."""
    name = f"c{c}-w{workers}-s{servers}" + (f"-{client.name}" if client else "") + (f"-ramp{ramp:g}" if ramp else "")
    taken = sum(1 for p in work.iterdir() if p.is_dir() and (p.name == name or p.name.startswith(f"{name}-run")))
    name += f"-run{taken + 1}" if taken else ""  # the same row twice in one table: each keeps its own folder
    log, out = work / f"{name}-server.jsonl", work / name
    server = start_server(
        0, log=log, ttft_ms=TTFT_MS, itl_ms=ITL_MS, cpu=f"0-{servers - 1}", processes=servers, timeout=120
    )
    cores = f"{servers}-{servers + workers - 1}"
    cmd = ["taskset", "-c", cores, sys.executable, "-m", "bench", "run", "--base-url", f"{server.base_url}/v1"]
    cmd += ["--tokenizer", str(TINY_MODEL), "--concurrency", str(c), "--num-prompts", str(rounds * c)]
    cmd += ["--input-len", str(INPUT_LEN), "--output-len", str(OUTPUT_LEN)]
    cmd += ["--workers", str(workers)] if workers > 1 or client is None else []  # older clients have one process
    cmd += ["--out", str(out.resolve()), "--no-progress", "--scrape-interval", "0", "--connect-timeout", "120"]
    cmd += ["--gpu-ids", "none"] if client is None else []  # the client is measured here, not the GPUs
    cmd += ["--ramp-up", str(ramp)] if ramp else []
    began = time.monotonic()
    try:
        env = os.environ | {"PYTHONPATH": str(client)} if client else None
        done = subprocess.run(cmd, cwd=client or ROOT, capture_output=True, text=True, env=env)
    finally:
        stop_server(server)
    if not (out / "summary.json").exists():
        raise SystemExit(f"client failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr[-2000:]}")
    summary = json.loads((out / "summary.json").read_text())
    entries = read_log(log)
    truth = accuracy.measured_requests(entries)
    err = accuracy.errors(accuracy.latencies_from_run(out), truth)
    records = list(read_records(out / "requests.jsonl"))  # once, for the stamps and the lag
    first, late = stamp_errors(out, records, entries)
    offered = offered_throughput(c, rounds, ramp)
    return {
        "C": c,
        "client": str(client) if client else "this checkout",
        "client procs": (summary.get("workers") or {}).get("count", 1),
        "server procs": servers,
        "failed": summary["failed"],
        "first-chunk err p99 ms": float(np.percentile(first, 99)) if len(first) else None,
        "ITL p99 err ms": err.get("itl_p99_error_ms"),
        "% of offered tok/s": 100 * (summary["output_throughput"] or 0) / offered,
        "client CPU ms / 1k chunks": summary["client_cpu_ms_per_1k_chunks"],
        "ramp-up ms": ramp * 1e3,
        "send lag p99 ms": summary["p99_send_lag_ms"],
        "after 1st round": later_send_lag_p99(records, c),
        "chunks >1 ms late": late,
        "server lag p99 ms": send_lag_stats(log)["p99_ms"],
        "wall s": round(time.monotonic() - began, 1),
        "verdict": summary["verdict"]["status"],
    }


def table(
    concurrencies: list[int],
    workers: list[int],
    servers: list[int],
    rounds: int,
    out: Path,
    client: Path | None = None,
    ramp: float = 0.0,
) -> str:
    """Run every row; print each as it comes (to stderr), return the markdown table."""
    work = out / f"scale-{datetime.now():%Y%m%d-%H%M%S}"
    work.mkdir(parents=True)
    rows = []
    for c, w, s in zip(concurrencies, workers, servers):
        print(f"scale: C={c}, {w} client and {s} server processes, {rounds * c} requests", file=sys.stderr, flush=True)
        rows.append(row(c, w, s, rounds, work, ramp=ramp))
        if client is not None:  # the same row from the other checkout, right after: side by side on one host
            rows.append(row(c, w, s, rounds, work, client, ramp))
        print(f"  {rows[-1]}", file=sys.stderr, flush=True)
    text = (
        f"## Scale (true TTFT {TTFT_MS:g} ms, ITL {ITL_MS:g} ms, {OUTPUT_LEN} tokens; server processes on the first "
        "cores, one each, client workers on the next)\n\n"
        + tabulate(rows, headers="keys", tablefmt="github", floatfmt=".2f")
        + "\n"
    )
    (work / "table.md").write_text(text)
    (work / "rows.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(f"written to {work}/table.md", file=sys.stderr)
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.lab.clientscale",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--concurrency", type=int, nargs="+", default=[1024, 4096, 8192], help="Closed-loop stream counts.")
    p.add_argument(
        "--workers", type=int, nargs="+", default=[1, 4, 8], help="Client processes: one, or one per concurrency."
    )
    p.add_argument(
        "--server-processes",
        type=int,
        nargs="+",
        default=[2, 6, 8],
        help="Calibration server processes: one, or one per concurrency (they take the first cores).",
    )
    p.add_argument("--rounds", type=int, default=2, help="Requests per stream (each takes ~2.6 s).")
    p.add_argument(
        "--ramp-up",
        type=float,
        default=0.0,
        help="Start the streams over this many seconds (bench run --ramp-up); default all at once.",
    )
    p.add_argument(
        "--compare-with",
        type=Path,
        help="Another checkout of this project (e.g. `git worktree add /tmp/base <commit>`): each row is also run "
        "with its client, right after ours, for a before/after table from one host.",
    )
    p.add_argument("--out", type=Path, default=ROOT / "results" / "bench-client", help="Folder for the table.")
    args = p.parse_args(argv)

    def body() -> None:
        workers, servers = plan(args.concurrency, args.workers, args.server_processes)
        if args.compare_with and not (args.compare_with / "bench" / "__init__.py").is_file():
            raise UserError(
                f"--compare-with {args.compare_with} holds no bench/ package; give a checkout of this project"
            )
        client = args.compare_with.resolve() if args.compare_with else None
        print(table(args.concurrency, workers, servers, args.rounds, args.out, client, args.ramp_up))

    return exit_status("python -m bench.lab.clientscale", body)


if __name__ == "__main__":
    sys.exit(main())
