"""Several client processes sharing one schedule: `bench run --workers N`.

One client process reads about 100,000 chunks a second on one core (~10 us a chunk), so past
about a thousand streams of 50 chunks/s it would fall behind its own schedule. N workers split
the load, each a process of its own with its own event loop, connection pool and core (pinned
where the OS allows). The schedule is dealt out in order: request k (warm-up and measured alike)
goes to worker k mod N with its arrival time, and a closed loop's streams are split evenly, each
worker's streams taking its own requests in order. Every worker warms up and opens its
connections, then waits for one start moment the parent sets, so the arrival times keep their
meaning across workers. Times stay on perf_counter (CLOCK_MONOTONIC, one clock for every process
of the host). Worker i appends its records to workers/requests-<i>.jsonl; the parent merges them
into requests.jsonl in schedule (id) order, and the summary is computed from that file exactly as
for one worker. A worker that dies is named in the summary and fails the run; the records it
finished are kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import math
import multiprocessing
import multiprocessing.connection
import os
import resource
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter

import orjson

from bench.instrument import sessions, traces, workload
from bench.instrument.reasoning import think_tags
from bench.instrument.records import RecordWriter
from bench.instrument.runner import Load, Progress, Runner
from bench.instrument.spec import RunSpec
from bench.instrument.workload import Prompt

# When one worker is enough: the client's CPU per chunk (measured at C=1024 with 128-token
# streams: ~10 us, so one core tops out near 100,000 chunks/s), a stream's chunk rate at a
# 20 ms decode step, and the share of a core one worker may fill and still read on time.
CHUNK_COST_S = 10e-6
STREAM_CHUNKS_PER_S = 50.0
CORE_SHARE = 0.6
PR_SET_PDEATHSIG = 1
PROGRESS_EVERY = 0.5  # s between a worker's progress reports, when the parent draws a bar
START_MARGIN = 0.05  # s from the last worker's "ready" to the shared start: time for every one to hear it


ONE_PROCESS_DATASETS = sessions.DATASETS + traces.FORMATS  # spec.py refuses --workers above 1 for these


def choose(spec: RunSpec, requests: int) -> tuple[int, str]:
    """How many workers, and why (said in the summary)."""
    if spec.dataset in ONE_PROCESS_DATASETS:  # a conversation's turns, a trace's shared blocks: kept in order
        return 1, f"{spec.dataset}: one process"
    if spec.until_steady:  # the steadiness watch sees every record as it ends
        return 1, "--until-steady: one process"
    cores = len(os.sched_getaffinity(0))
    most = min(x for x in (spec.concurrency, requests) if x) if requests else 1
    if spec.workers:
        n = min(spec.workers, most)
        return n, "--workers" + (f" (cut to {n}: no more streams than that)" if n < spec.workers else "")
    rates = []  # chunks/s the load can bring, by each of its bounds
    if spec.concurrency:
        rates.append(spec.concurrency * STREAM_CHUNKS_PER_S)
    if spec.rate and spec.rate != float("inf"):
        rates.append(spec.rate * (spec.output_len or 128))  # requests/s x a chunk per token
    chunks = min(rates, default=0.0)
    need = chunks * CHUNK_COST_S / CORE_SHARE
    n = max(1, min(math.ceil(need), cores, most))
    return n, (
        f"default: ~{chunks:,.0f} chunks/s expected ({STREAM_CHUNKS_PER_S:g} a stream) x {CHUNK_COST_S * 1e6:g} us "
        f"a chunk needs {need:.2f} workers filling {CORE_SHARE:.0%} of a core each ({cores} cores here)"
    )


@dataclass
class Share:
    """One worker's part of the schedule."""

    index: int
    warm: list[Prompt]
    warm_ids: list[int]
    prompts: list[Prompt]
    ids: list[int]
    load: Load  # its share of the concurrency, its requests' arrival times
    core: int | None  # the core it pins itself to; None: any


def deal(warm: list[Prompt], prompts: list[Prompt], load: Load, n: int) -> list[Share]:
    """Request k to worker k mod n, in order; the concurrency split evenly (the first get one more)."""
    cores = sorted(os.sched_getaffinity(0))
    w = len(warm)
    shares = []
    for i in range(n):
        cap = None if load.concurrency is None else load.concurrency // n + (i < load.concurrency % n)
        arrivals = load.arrivals[i::n] if load.arrivals is not None else None
        shares.append(
            Share(
                index=i,
                warm=warm[i::n],
                warm_ids=list(range(i, w, n)),
                prompts=prompts[i::n],
                ids=list(range(w + i, w + len(prompts), n)),
                load=Load(cap, load.rate, arrivals, load.duration, load.timeout),
                core=cores[i] if n <= len(cores) else None,
            )
        )
    return shares


@dataclass
class Job:
    """What every worker needs; the functions travel by name (measure's, so no import circles back)."""

    spec: RunSpec
    model: str
    tokenizer: str  # the tokenizer.json, loaded again in each worker
    t0: float
    folder: Path  # the run folder
    open_transport: Callable
    request_body: Callable
    send: Callable  # async (runner, warm, prompts, load) -> the signal that stopped it, 0 when none
    loop_run: Callable  # runs a coroutine on the event loop of choice
    progress: bool = False  # the parent draws a progress bar: each worker reports its counts


@dataclass
class Ran:
    stopped_by: int  # the signal that stopped the run, 0 when none
    cpu_s: float  # the workers' CPU while sending, summed over those that reported it
    encode_cpu_s: float = 0.0  # their CPU encoding request bodies before timing began (not in cpu_s)
    info: dict = field(default_factory=dict)  # summary["workers"]


def records_file(folder: Path, index: int) -> Path:
    return folder / "workers" / f"requests-{index}.jsonl"


# ---- in each worker ----


def raise_open_files() -> None:
    """A socket per stream: thousands of streams need more files than a default soft limit of 1,024."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _worker(job: Job, share: Share, pipe) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # until its event loop takes Ctrl-C over (the parent forwards it)
    with contextlib.suppress(OSError, AttributeError):  # Linux: SIGTERM when the parent dies, so it stops and
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)  # writes what it has
    if share.core is not None:
        with contextlib.suppress(OSError):  # not allowed here: the kernel places it
            os.sched_setaffinity(0, {share.core})
    raise_open_files()
    spec = job.spec
    tok = workload.load_tokenizer(job.tokenizer)
    transport = job.open_transport(spec, workload.token_counter(tok), think=think_tags(tok))
    make_body = job.request_body(job.model, spec.api, spec.ignore_eos, spec.extra_body)
    writer = RecordWriter(records_file(job.folder, share.index))

    def begin() -> float:
        """Warmed up and connected: tell the parent, and wait for the shared start."""
        pipe.send(("ready", None))
        start = pipe.recv()
        while (left := start - perf_counter()) > 2e-3:
            time.sleep(left - 1e-3)
        while perf_counter() < start:
            pass  # the last millisecond spun: a sleep wakes late
        return start

    runner = Runner(transport, writer, make_body, job.t0, show_progress=False, on_measure_start=begin)
    runner.worker, runner.ids = share.index, {True: share.warm_ids, False: share.ids}
    gc.collect()
    gc.freeze()
    gc.disable()  # as in measure(): sending makes no cyclic garbage
    cpu = time.process_time()
    sending = job.send(runner, share.warm, share.prompts, share.load)
    stopped_by = job.loop_run(_reporting(sending, runner, pipe) if job.progress else sending)
    cpu = time.process_time() - cpu - runner.encode_cpu
    pipe.send(("done", {"cpu_s": cpu, "encode_cpu_s": runner.encode_cpu, "stopped_by": stopped_by}))


async def _reporting(sending, runner: Runner, pipe):
    """Send, telling the parent this worker's progress every PROGRESS_EVERY s (for its bar)."""
    loop = asyncio.get_running_loop()
    handle = None

    def report(again: bool = True) -> None:
        nonlocal handle
        p = runner.progress
        pipe.send(("progress", (p.total, p.done, p.failed, p.in_flight)))
        handle = loop.call_later(PROGRESS_EVERY, report) if again else None

    handle = loop.call_later(PROGRESS_EVERY, report)
    try:
        return await sending
    finally:
        handle.cancel()
        report(again=False)  # the last counts, for the bar's last line


# ---- in the parent ----


def run(job: Job, shares: list[Share], on_measure_start: Callable[[], None] | None) -> Ran:
    """Start a worker per share, start them together, wait for all, merge their records."""
    (job.folder / "workers").mkdir(exist_ok=True)
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter each: no copied event loop or sockets
    procs, pipes = {}, {}
    for share in shares:
        mine, theirs = ctx.Pipe()
        proc = ctx.Process(target=_worker, args=(job, share, theirs), name=f"bench-worker-{share.index}")
        proc.start()
        theirs.close()
        procs[share.index], pipes[share.index] = proc, mine
    stopping: list[int] = []

    def forward(signum, _frame) -> None:
        stopping.append(signum)
        for proc in procs.values():
            if proc.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signum)

    before = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        results = _supervise(procs, pipes, on_measure_start, job.progress)
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
        for proc in procs.values():
            proc.join()
    kept = merge(job.folder, len(shares))
    died = [
        {"worker": i, "exit": proc.exitcode, "why": _why(proc.exitcode), "records_kept": kept.get(i, 0)}
        for i, proc in procs.items()
        if i not in results
    ]
    stopped = max([r["stopped_by"] for r in results.values()] + stopping[:1], default=0)
    info = {"count": len(shares), "cores": [s.core for s in shares], "died": died}
    encode = sum(r["encode_cpu_s"] for r in results.values())
    return Ran(stopped, sum(r["cpu_s"] for r in results.values()), encode_cpu_s=encode, info=info)


def _supervise(procs: dict, pipes: dict, on_measure_start, bar: bool) -> dict[int, dict]:
    """Answer the workers until every one has ended: the shared start once all are ready (or
    gone), then their results; draw their progress when asked. Returns {worker: result} of those
    that finished."""
    ready, results, start = set(), {}, None
    counts: dict[int, tuple] = {}  # each worker's last progress report
    began = perf_counter()
    open_pipes = dict(pipes)
    while open_pipes:
        waiting = {pipe: i for i, pipe in open_pipes.items()}
        for pipe in multiprocessing.connection.wait(list(waiting)):
            i = waiting[pipe]
            try:
                kind, value = pipe.recv()
            except (EOFError, OSError):  # the worker ended (its result, if any, came first)
                del open_pipes[i]
                continue
            if kind == "ready":
                ready.add(i)
            elif kind == "progress":
                counts[i] = value
                if bar:
                    print(_bar(counts, began), end="", file=sys.stderr, flush=True)
            else:
                results[i] = value
        if start is None and ready and ready >= {i for i in open_pipes if i not in results}:
            if on_measure_start is not None:
                on_measure_start()  # e.g. the scraper's "before" scrape, before anything is sent
            start = perf_counter() + START_MARGIN
            for i in ready:
                with contextlib.suppress(OSError):
                    pipes[i].send(start)
    if bar and counts:
        print(_bar(counts, began), file=sys.stderr)
    return results


def _bar(counts: dict[int, tuple], began: float) -> str:
    total, done, failed, in_flight = (sum(c[k] for c in counts.values()) for k in range(4))
    return Progress(total, done, failed, in_flight, began).line()


def _why(code: int | None) -> str:
    if code is not None and code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exited with status {code}"


def merge(folder: Path, n: int | None = None) -> dict[int, int]:
    """Every worker's records into requests.jsonl, in id order; a torn last line (a killed
    worker) is left out. Returns the records kept per worker. n=None: as many as there are
    files (`bench summarize` of a run whose parent was killed before it merged them)."""
    if n is None:
        n = 1 + max((int(f.stem.rsplit("-", 1)[1]) for f in (folder / "workers").glob("requests-*.jsonl")), default=-1)
    lines, kept = [], {}
    for i in range(n):
        path = records_file(folder, i)
        if not path.exists():
            continue
        with open(path, "rb") as f:
            for line in f:
                try:
                    rid = orjson.loads(line)["id"]
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    continue
                lines.append((rid, line if line.endswith(b"\n") else line + b"\n"))
                kept[i] = kept.get(i, 0) + 1
    lines.sort(key=lambda x: x[0])
    with open(folder / "requests.jsonl", "ab") as f:
        f.write(b"".join(line for _, line in lines))
    for i in range(n):
        records_file(folder, i).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        (folder / "workers").rmdir()
    return kept
