"""`just bench-client`: this client against `vllm bench serve`, on the same workloads.

Part 1, calibration: the calibration server pinned to core 0, each client pinned to core 1,
closed loops of C streams (128 output tokens, true TTFT 50 ms, one token every 20 ms);
errors against the server's log, share of the ideal throughput, client CPU per 1,000 chunks
and peak RSS (from wait4 on the client process). Part 2, the real CPU engine (core 0, the
client on core 1): both clients on one server and workload, in alternating pairs of short
runs; throughput, TPOT and TTFT side by side and as per-pair ratios; then both clients at
once, C/2 streams each, compared over the same seconds of the same engine
(bench.lab.clientbench_engine; the two clients' runs: bench.lab.clientbench_clients). Part 3, with
--scale C...: this client alone at thousands of streams, on several processes on both sides
(bench.lab.clientscale).
A benchmark, not a test: it prints figures and writes them to results/bench-client/.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
from tabulate import tabulate

from bench.errors import UserError, exit_status
from bench.instrument.records import read_records
from bench.lab import accuracy, clientscale
from bench.lab.calibration import read_log, send_lag_stats, start_server, stop_server
from bench.lab.clientbench_clients import INPUT_LEN, ITL_MS, OUTPUT_LEN, TTFT_MS, VLLM_PYTHON, ours, theirs
from bench.lab.clientbench_engine import engine_rows, engine_summary, ttft_beside_error_bars
from bench.paths import ROOT


def floor_client(port: int, concurrency: int, n: int) -> None:
    """The least any asyncio client can spend: a protocol that only notices a response's end.

    Run pinned to the client core, it prints its CPU per 1,000 chunks: the event loop's and the
    kernel's share of the cost, which no parsing or bookkeeping can go below.
    """
    import asyncio

    import uvloop

    class Bare(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport, self.done = transport, None

        def data_received(self, data):
            if data.endswith(b"\r\n0\r\n\r\n") and b"[DONE]" in data:
                self.done.set_result(None)

    async def run() -> float:
        loop = asyncio.get_running_loop()
        conns = [(await loop.create_connection(Bare, "127.0.0.1", port))[1] for _ in range(concurrency)]
        todo = iter(range(n))
        body = (
            f'{{"model":"calibration","prompt":"{"x " * INPUT_LEN}","max_tokens":{OUTPUT_LEN},"stream":true,'
            '"stream_options":{"include_usage":true,"continuous_usage_stats":true}}'
        )
        request = (
            f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n{body}"
        ).encode()

        async def worker(conn):
            for _ in todo:
                conn.done = loop.create_future()
                conn.transport.write(request)
                await conn.done

        cpu = time.process_time()
        await asyncio.gather(*(worker(c) for c in conns))
        return time.process_time() - cpu

    print(1e6 * uvloop.run(run()) / (n * OUTPUT_LEN))


def floor_row(concurrency: int, n: int, work: Path) -> dict:
    server = start_server(0, log=work / f"floor-c{concurrency}-server.jsonl", ttft_ms=TTFT_MS, itl_ms=ITL_MS, cpu=0)
    try:
        out = subprocess.run(
            [
                "taskset",
                "-c",
                "1",
                sys.executable,
                "-c",
                f"from bench.lab.clientbench import floor_client; floor_client({server.port}, {concurrency}, {n})",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        stop_server(server)
    return {
        "client": "bare uvloop protocol (floor)",
        "C": concurrency,
        "requests": n,
        "load-phase CPU ms / 1k": float(out.strip()),
    }


def calibration_row(client: str, concurrency: int, n: int, work: Path, run: int = 1) -> dict:
    """One client at one concurrency against a fresh calibration server on core 0."""
    name = f"{client}-c{concurrency}" + (f"-{run}" if run > 1 else "")
    log, out = work / f"{name}-server.jsonl", work / name
    server = start_server(0, log=log, ttft_ms=TTFT_MS, itl_ms=ITL_MS, cpu=0)
    try:
        if client == "bench":
            usage, res = ours(server.base_url, concurrency, n, out, cpu=1)
        else:
            out.mkdir(parents=True)
            usage, res = theirs(server.base_url, "calibration", concurrency, n, out, cpu=1)
    finally:
        stop_server(server)
    entries = read_log(log)
    prefix = "vllm-bench-" if client == "vllm" else "bench-"
    truth = accuracy.latencies_from_log(entries, {rid for rid in entries if rid.startswith(prefix)})
    chunks = len(truth["itl"]) + len(truth["ttft"])
    ideal = concurrency * OUTPUT_LEN / ((TTFT_MS + (OUTPUT_LEN - 1) * ITL_MS) / 1e3)
    err = accuracy.errors(res["_lat"], truth)
    lag = send_lag_stats(log)
    return {
        "client": client,
        "C": concurrency,
        "run": run,
        "requests": n,
        "TTFT true mean ms": truth["ttft"].mean(),
        "TTFT measured mean ms": res["_lat"]["ttft"].mean(),
        "TTFT mean err ms": err["ttft_mean_error_ms"],
        "TTFT p99 err ms": err["ttft_p99_error_ms"],
        "ITL p99 err ms": err["itl_p99_error_ms"],
        "% of ideal tok/s": 100 * res["output_throughput"] / ideal,
        # the same against what the server really delivered (its own lateness taken out)
        "% of served tok/s": 100 * res["output_throughput"] / (concurrency * OUTPUT_LEN / (truth["e2el"].mean() / 1e3)),
        "CPU ms / 1k chunks": 1e6 * usage["cpu_s"] / chunks,
        "load-phase CPU ms / 1k": res.get("client_cpu_ms_per_1k_chunks"),
        "peak RSS MB": usage["rss_mb"],
        "chunks >1 ms late": _late_chunks(out, entries) if client == "bench" else None,
        "server lag p99 ms": lag["p99_ms"],
    }


def _late_chunks(out: Path, entries: dict[str, dict]) -> int:
    """Chunks our client stamped more than 1 ms after the server sent them, matched one by one
    (a stamp shared by two chunks read together shows here first)."""
    t0 = json.loads((out / "manifest.json").read_text())["clock"]["t0_perf_counter"]
    sent = {int(rid.rsplit("-", 1)[1]): e["sent"] for rid, e in entries.items() if rid.startswith("bench-")}
    late = 0
    for r in read_records(out / "requests.jsonl"):
        if r.ok and not r.warmup and r.id in sent:
            late += int(np.count_nonzero(t0 + np.asarray(r.chunk_times) - np.asarray(sent[r.id]) > 1e-3))
    return late


def _ratio_rows(rows: list[dict], keys: list[str], by: tuple[str, ...]) -> list[dict]:
    """ours / theirs for each key, per group of `by`, averaged over repetitions."""
    out = []
    for group in sorted({tuple(r[k] for k in by) for r in rows}):
        pick = {
            c: [r for r in rows if r["client"] == c and tuple(r[k] for k in by) == group] for c in ("bench", "vllm")
        }
        if not pick["bench"] or not pick["vllm"]:
            continue
        ratio = {"client": "ours/theirs", **dict(zip(by, group))}
        for k in keys:
            a = sum(r[k] for r in pick["bench"]) / len(pick["bench"])
            b = sum(r[k] for r in pick["vllm"]) / len(pick["vllm"])
            ratio[k] = a / b if b else float("nan")
        out.append(ratio)
    return out


def _spread(calib: list[dict], top: int) -> list[str]:
    """One line per client: the figures of every run at the top concurrency, so a reader sees
    how much one run can be trusted on this host."""
    keys = ("load-phase CPU ms / 1k", "% of ideal tok/s", "TTFT mean err ms", "server lag p99 ms")
    lines = []
    for client in ("bench", "vllm"):
        runs = [r for r in calib if r["client"] == client and r["C"] == top]
        if len(runs) > 1:
            parts = [f"{k} " + ", ".join(f"{r[k]:.2f}" for r in runs) for k in keys if runs[0][k] is not None]
            lines.append(f"- {client} at C={top}, {len(runs)} runs: " + "; ".join(parts))
    return ["", *lines] if lines else []


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.lab.clientbench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--concurrency",
        type=int,
        nargs="+",
        default=[1, 64, 256, 1024],
        help="Closed-loop stream counts for the calibration part.",
    )
    p.add_argument(
        "--top-runs",
        type=int,
        default=3,
        help="Runs of each client at the highest concurrency, where the targets are tightest "
        "and this host's noise shows most (the order alternating).",
    )
    p.add_argument(
        "--engine-concurrency",
        type=int,
        nargs="*",
        default=[8, 64],
        help="Concurrencies for the CPU-engine part; none to skip it.",
    )
    p.add_argument("--engine-prompts", type=int, default=128, help="Requests per CPU-engine run.")
    p.add_argument(
        "--pairs",
        type=int,
        default=8,
        help="CPU-engine run pairs (ours, theirs) per concurrency, the order alternating.",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=ROOT / "results" / "bench-client",
        help="Folder for the tables (a new sub-folder per invocation).",
    )
    p.add_argument(
        "--scale",
        type=int,
        nargs="*",
        default=[],
        metavar="C",
        help="Add the scale table (bench.lab.clientscale) at these concurrencies, e.g. 1024 4096 8192; "
        "it needs --scale-workers + --scale-server-processes cores per row.",
    )
    p.add_argument(
        "--scale-workers",
        type=int,
        nargs="+",
        default=[1, 4, 8],
        help="Client processes per scale row (one, or one each).",
    )
    p.add_argument(
        "--scale-server-processes",
        type=int,
        nargs="+",
        default=[2, 6, 8],
        help="Calibration server processes per scale row (one, or one each).",
    )
    args = p.parse_args(argv)
    return exit_status("just bench-client", lambda: run(args))


def run(args: argparse.Namespace) -> int:
    if not Path(VLLM_PYTHON).exists():
        raise UserError(f"no vLLM venv at {VLLM_PYTHON}; run `just cpu-install` first")
    scale = clientscale.plan(args.scale, args.scale_workers, args.scale_server_processes) if args.scale else None
    work = args.out / datetime.now().strftime("%Y%m%d-%H%M%S")
    work.mkdir(parents=True)

    # Part 1: both clients against the calibration server, one concurrency at a time.
    calib = []
    top = max(args.concurrency)
    for c in args.concurrency:
        n = max(10, 2 * c) if c > 1 else 10
        for run in range(1, (args.top_runs if c == top else 1) + 1):
            for client in ("bench", "vllm") if run % 2 else ("vllm", "bench"):
                print(f"calibration: {client} at C={c}, {n} requests, run {run}", file=sys.stderr, flush=True)
                calib.append(calibration_row(client, c, n, work, run))
    print(f"calibration: floor at C={top}", file=sys.stderr, flush=True)
    floor = floor_row(top, max(10, 2 * top), work)
    keys = [
        "TTFT mean err ms",
        "TTFT p99 err ms",
        "ITL p99 err ms",
        "% of ideal tok/s",
        "% of served tok/s",
        "CPU ms / 1k chunks",
        "peak RSS MB",
    ]
    text = [
        "## Calibration server (true TTFT 50 ms, ITL 20 ms, 128 tokens; server core 0, client core 1)\n",
        tabulate(calib + _ratio_rows(calib, keys, ("C",)) + [floor], headers="keys", tablefmt="github", floatfmt=".2f"),
        "\nCPU ms / 1k chunks: the whole client process (start-up included) per chunk sent by the server; "
        "load-phase: ours only, while sending (from its summary). The floor row is a bare uvloop protocol "
        "that only notices each response's end: the event loop's and kernel's share, below any real client.",
    ]
    text += _spread(calib, top)
    late = [r for r in calib if r["server lag p99 ms"] > 0.5]
    if late:
        text.append(
            "\nWARNING: the calibration server's own send lag p99 exceeded 0.5 ms in "
            + ", ".join(f"{r['client']} C={r['C']} run {r['run']}" for r in late)
            + "; there the server's lateness is in the throughput too (% of served takes it out)."
        )

    # Part 2: both clients on the real CPU engine, alternating.
    if args.engine_concurrency:
        eng, together = engine_rows(args.engine_concurrency, args.engine_prompts, args.pairs, work)
        text += [
            f"\n## CPU engine (tiny Llama, 64 in / 128 out, {args.engine_prompts} requests a run; "
            "engine on core 0, client on core 1; every run in rows.json)\n",
            "One client after the other, in alternating pairs:\n",
            tabulate(engine_summary(eng), headers="keys", tablefmt="github", floatfmt=".2f"),
            "",
            *ttft_beside_error_bars(eng, calib),
            "\nBoth at once, C/2 streams each (the same engine moment; window where both keep "
            "all streams busy, ratio +- standard error over its sixths):\n",
            tabulate(together, headers="keys", tablefmt="github", floatfmt=".2f"),
        ]
    if scale is not None:  # Part 3: thousands of streams, many processes on each side
        text += ["", clientscale.table(args.scale, *scale, rounds=2, out=work)]
    report = "\n".join(text) + "\n"
    print(report)
    (work / "table.md").write_text(report)
    (work / "rows.json").write_text(
        json.dumps(
            {
                "calibration": calib,
                "floor": floor,
                "engine": eng if args.engine_concurrency else [],
                "together": together if args.engine_concurrency else [],
            },
            indent=2,
            default=float,
        )
        + "\n"
    )
    print(f"written to {work}/table.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
