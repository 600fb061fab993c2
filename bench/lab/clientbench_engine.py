"""`just bench-client`, part 2: both clients on the real CPU engine, one after the other in
alternating pairs, and both at once on the same engine moment.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

from bench.instrument import metrics
from bench.instrument.records import read_records
from bench.lab.clientbench_clients import INPUT_LEN, OUTPUT_LEN, TOKENIZER, ours, theirs
from bench.paths import ROOT


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
        "--gpu-ids",
        "none",
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


def ttft_beside_error_bars(eng: list[dict], calib: list[dict]) -> list[str]:
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
