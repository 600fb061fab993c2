"""Calibration server: an OpenAI-compatible streaming server whose timing is known exactly.

It generates nothing. A request asking for N tokens gets N fixed tokens (" tok"), k per chunk,
the first chunk due `ttft` after the request reached the socket (the kernel's arrival stamp,
so a busy server cannot start the clock late) and chunk i due `i * itl` after the first, on a
fixed schedule so lateness never compounds. Every chunk's planned and actual send time goes
to a JSONL log, the truth a benchmark client's measurements are checked against. One
scheduler wakes (timerfd, sub-ms) at the next due time, writes every due chunk of every
stream and parses new requests in the gaps, so one core keeps up with tens of thousands of
chunks per second.

    python -m bench.lab.calibration --port 8100 --ttft-ms 50 --itl-ms 20 --log calib.jsonl

A request may override the timing with a body field
`"calibration": {"ttft_ms": 10, "itl_ms": 5, "tokens_per_chunk": 3}`. With --reasoning-tokens R
(or `"reasoning_tokens": R` there) it answers as a reasoning model: R reasoning tokens, then the
answer (bench.lab.calibration_reasoning), and its log says which chunk began the answer.

--processes N serves from N processes on one port (SO_REUSEPORT), each on its own core and log,
for loads one process cannot send on time (bench.lab.calibration_fleet); read_log merges the logs.
--ttft-per-stream-ms A and --itl-per-stream-ms B make a server that slows down with load along a
known line: a request that arrives while n other streams are in flight gets TTFT ttft + A * n and
ITL itl + B * n (so a closed loop at concurrency C sees ttft + A * (C - 1)), which puts an SLO's
answer where a test knows it is.

GET /metrics answers Prometheus text counting what was served (bench.lab.calibration_metrics).
--usage-scale X makes every usage the server REPORTS (per chunk, at the end of a stream, in a
non-streamed answer) round(X * true tokens) while /metrics still counts the truth: a server whose
usage and counters disagree, on purpose.

The log (--log) gets one JSON line per request when it ends. Lines are written in batches when
the scheduler goes back to the sockets (within about a millisecond), always before the server
reads its next request (so once a client got any later answer, even /health, the entries of
the responses it saw end are in the file) and when it stops:
  id                 the X-Request-Id header, else "calib-N"
  received           when the request's last bytes reached the socket (kernel timestamp)
  parsed             when the server had read and parsed it (late only when it was busy)
  due_first, due_step   chunk i was due at due_first + i * due_step (received + ttft + i * itl)
  sent               per chunk: when its bytes were handed to send() (the last chunk's send
                     carries the end of the body too)
  tokens             per chunk: tokens carried (a non-streamed answer is one "chunk")
  prompt_tokens, completion_tokens   what the usage said
  stream, api, ttft_ms, itl_ms, tokens_per_chunk   the request's settings
  error              only when unfinished: "client disconnected" or "server stopped"
Times are absolute time.perf_counter() seconds (CLOCK_MONOTONIC, shared by all processes).
read_log() adds `due`, the list of planned send times.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import errno
import gc
import heapq
import itertools
import os
import resource
import select
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

import orjson

from bench.errors import UserError, exit_status
from bench.lab import calibration_fleet
from bench.lab.calibration_faults import FAULTS, Faults, parse_shares
from bench.lab.calibration_http import Listener, Stream
from bench.lab.calibration_metrics import Counts
from bench.paths import ROOT

READY = "calibration server ready on "
EARLY = 150e-6  # wake this long before a chunk is due, then spin: wake-ups come ~50-100 us late
BATCH = 5e-4  # longest the scheduler holds the event loop: requests wait that long
GC_EVERY = 10000  # objects allocated before an idle server collects cyclic garbage
perf_counter = time.perf_counter


class _Timespec(ctypes.Structure):
    _fields_ = [("sec", ctypes.c_long), ("nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("interval", _Timespec), ("value", _Timespec)]


class Scheduler:
    """Sends every stream's chunks on time from one heap of (due, seq, stream), and parses
    waiting requests in the gaps.

    Earliest deadline first: a request that has waited `parse_by` (half the default TTFT; its
    own first chunk is due TTFT after arrival) goes before chunks that are overdue by less.
    The wake-up is a timerfd on CLOCK_MONOTONIC (perf_counter's clock) at an absolute time,
    because asyncio and uvloop timers round to whole milliseconds.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, log_fd: int, parse_by: float):
        self.loop, self.log_fd, self.parse_by = loop, log_fd, parse_by
        self.heap: list = []
        self.backlog: deque = deque()  # connections holding a request not parsed yet
        self.seq = itertools.count()
        self.armed: float | None = None  # when the pending wake-up comes; None: none pending
        self.active: set[Stream] = set()
        self.lines: list[bytes] = []  # log lines not written yet
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.timerfd_create(1, os.O_NONBLOCK | os.O_CLOEXEC)  # 1 = CLOCK_MONOTONIC
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create failed")
        self.spec = _Itimerspec()
        loop.add_reader(self.fd, self._wake)

    def add(self, stream: Stream, due: float) -> None:
        self.active.add(stream)
        heapq.heappush(self.heap, (due, next(self.seq), stream))
        if self.armed is None or due - EARLY < self.armed:
            self._arm(due - EARLY)

    def defer(self, conn) -> None:
        """Queue a connection whose request is in: its clock already runs from the arrival
        stamp, so parsing it may wait for a gap between chunks that are due."""
        self.backlog.append(conn)
        if self.armed is None or self.armed > perf_counter():
            self._soon()

    def _soon(self) -> None:
        self.armed = 0.0
        self.loop.call_soon(self._wake)

    def _arm(self, t: float) -> None:
        self.armed = t
        sec = int(t)
        self.spec.value.sec = sec
        self.spec.value.nsec = max(1, int((t - sec) * 1e9))  # (0, 0) would disarm the timer
        self.libc.timerfd_settime(self.fd, 1, ctypes.byref(self.spec), None)  # 1 = ABSTIME

    def _wake(self) -> None:
        try:
            os.read(self.fd, 8)
        except BlockingIOError:
            pass
        self.armed = None
        heap, backlog, pop, replace = self.heap, self.backlog, heapq.heappop, heapq.heapreplace
        clock = perf_counter
        start = now = clock()
        # Due chunks and waiting requests by deadline; a gap shorter than EARLY is spun through
        # (a sleep costs more and wakes late); every BATCH the loop goes back to the sockets.
        while now - start < BATCH:
            if heap and heap[0][0] <= now and not (backlog and backlog[0].arrived + self.parse_by < heap[0][0]):
                due, seq, stream = heap[0]
                nxt = stream.send(due)
                if nxt is None:
                    pop(heap)
                else:
                    replace(heap, (nxt, seq, stream))
            elif backlog:
                self.flush()
                backlog.popleft().parse()
            elif not heap or heap[0][0] - now > EARLY:
                break
            now = clock()
        self.flush()
        if backlog or (heap and heap[0][0] - EARLY <= now):
            self._soon()  # still behind: back right after pending I/O, no timer needed
        elif heap:
            self._arm(heap[0][0] - EARLY)

    def finished(self, stream: Stream, line: bytes) -> None:
        """Queue the stream's log line; the next flush writes it with the others that ended."""
        self.active.discard(stream)
        self.lines.append(line)
        if not self.active and gc.get_count()[0] > GC_EVERY:
            gc.collect()  # idle now; see serve() for why the collector waits for this

    def log(self, entry: dict) -> None:
        """Queue the log line of a request answered without a stream (an injected fault)."""
        self.lines.append(orjson.dumps(entry) + b"\n")

    def flush(self) -> None:
        if self.lines:
            os.write(self.log_fd, b"".join(self.lines))
            self.lines.clear()

    def shutdown(self) -> None:
        for stream in list(self.active):
            stream.finish("server stopped")
        self.flush()


# ---- the process: arguments, start, stop ---------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="Address to listen on; keep loopback.")
    p.add_argument("--port", type=int, default=8100, help="Port to listen on; 0 picks a free one.")
    p.add_argument("--model", default="calibration", help="Model id served and listed by /v1/models.")
    p.add_argument(
        "--max-model-len",
        type=int,
        default=131072,
        help="Context length announced by /v1/models; longer requests get HTTP 400.",
    )
    p.add_argument(
        "--ttft-ms", type=float, default=50.0, help="Time from a fully received request to its first chunk, in ms."
    )
    p.add_argument("--itl-ms", type=float, default=20.0, help="Time between chunks, in ms.")
    p.add_argument(
        "--tokens-per-chunk", type=int, default=1, help="Tokens carried by each chunk (the last may carry fewer)."
    )
    p.add_argument(
        "--ttft-per-stream-ms",
        type=float,
        default=0.0,
        help="TTFT added per other stream in flight when a request arrives, in ms (a server that slows with load).",
    )
    p.add_argument(
        "--itl-per-stream-ms",
        type=float,
        default=0.0,
        help="ITL added per other stream in flight when a request arrives, in ms (a server that slows with load).",
    )
    p.add_argument(
        "--reasoning-tokens",
        type=int,
        default=0,
        help="Stream this many reasoning tokens before the answer, as a reasoning model (default 0: none).",
    )
    p.add_argument(
        "--reasoning-field",
        choices=["reasoning_content", "reasoning"],
        default="reasoning_content",
        help="The chat delta field carrying reasoning: reasoning_content (SGLang, TensorRT-LLM) or reasoning (vLLM).",
    )
    p.add_argument(
        "--log",
        required=True,
        type=Path,
        help="JSONL file receiving one line per finished request (truncated at start).",
    )
    p.add_argument(
        "--faults",
        default="",
        metavar="NAME=SHARE,...",
        help="Inject faults into this share of requests, drawn per request (e.g. reset=0.01,http_500=0.01); "
        "names: " + ", ".join(FAULTS) + ". A request's X-Calibration-Fault header picks one itself.",
    )
    p.add_argument("--fault-seed", type=int, default=0, help="Seed of the fault draws (same seed, same faults).")
    p.add_argument("--exit-after", type=int, help="Exit (status 3, as a crash) when this many requests have come.")
    p.add_argument(
        "--hang-first",
        type=int,
        default=0,
        help="Never answer the first N completion requests (streamed or not), as an engine still warming up.",
    )
    p.add_argument(
        "--usage-scale",
        type=float,
        default=1.0,
        help="Report round(X * true tokens) in every usage while /metrics counts the truth, to test "
        "that a usage/counter disagreement is caught (default 1.0: the truth).",
    )
    p.add_argument(
        "--processes",
        type=int,
        default=1,
        help="Serve from this many processes sharing the port (SO_REUSEPORT), each on a core of its own "
        "where allowed and logging to its own file (calib.jsonl, calib.1.jsonl, ...; read_log merges them); "
        "for loads one process cannot send on time (C in the thousands).",
    )
    p.add_argument(
        "--reuse-port",
        action="store_true",
        help="Share the port with other servers that set it too (how --processes starts its others).",
    )
    p.add_argument(
        "--loop",
        choices=["auto", "uvloop", "asyncio"],
        default="auto",
        help="Event loop; auto uses uvloop when installed.",
    )


async def serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    defaults = {"ttft_ms": args.ttft_ms, "itl_ms": args.itl_ms, "tokens_per_chunk": args.tokens_per_chunk}
    defaults |= {"reasoning_tokens": args.reasoning_tokens, "reasoning_field": args.reasoning_field}
    try:
        faults = Faults(parse_shares(args.faults), args.fault_seed, args.exit_after, args.hang_first)
    except ValueError as e:
        raise UserError(f"--faults: {e}.") from None
    info = {"model": args.model, "max_model_len": args.max_model_len, "defaults": defaults, "faults": faults}
    info |= {"counts": Counts(), "usage_scale": args.usage_scale}
    if args.ttft_per_stream_ms or args.itl_per_stream_ms:
        info["per_stream"] = (args.ttft_per_stream_ms / 1e3, args.itl_per_stream_ms / 1e3)
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if args.processes > 1 or args.reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:  # bind first, so a second server on a busy port leaves the first one's log alone
        sock.bind((args.host, args.port))
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise UserError(
                f"port {args.port} on {args.host} is already in use: stop what holds it or pick another with --port."
            ) from None
        raise UserError(f"cannot listen on {args.host}:{args.port}: {e.strerror}.") from None
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # a socket per stream, thousands of them
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    sock.listen(4096)
    sock.setblocking(False)
    others = []
    if not args.reuse_port:  # the first (or only) process
        calibration_fleet.remove_stale_logs(args.log, args.processes)
    if args.processes > 1:
        try:
            port = sock.getsockname()[1]
            others = calibration_fleet.start_others(args.argv, args.log, port, args.processes, READY)
        except RuntimeError as e:
            raise UserError(f"{e}; its message is above.") from None
    log_fd = os.open(args.log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
    sched = Scheduler(loop, log_fd, parse_by=args.ttft_ms / 2e3)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    listener = Listener(sock, sched, info)
    # The collector's full pass over a thousand live streams held every chunk up for 13 ms at
    # C=1024. Serving makes almost no cyclic garbage (73 objects in a 2,048-request run), so
    # the collector is off and runs only when no stream is active; start-up objects are frozen.
    gc.freeze()
    gc.disable()
    print(f"{READY}http://{args.host}:{sock.getsockname()[1]}", flush=True)
    await stop.wait()
    listener.close()
    sched.shutdown()  # unfinished streams are logged too, marked "server stopped"
    os.close(log_fd)
    calibration_fleet.stop_others(others)


def main(argv: list[str] | None = None) -> int:
    prog = "python -m bench.lab.calibration"
    p = argparse.ArgumentParser(
        prog=prog,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p)
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what --processes starts its others with

    def body() -> None:
        if args.processes < 1:
            raise UserError("--processes must be 1 or more.")
        if args.ttft_ms < 0 or args.itl_ms < 0 or args.tokens_per_chunk < 1 or args.reasoning_tokens < 0:
            raise UserError("--ttft-ms and --itl-ms must be >= 0 (--reasoning-tokens too) and --tokens-per-chunk >= 1.")
        if args.ttft_per_stream_ms < 0 or args.itl_per_stream_ms < 0:
            raise UserError("--ttft-per-stream-ms and --itl-per-stream-ms must be >= 0.")
        run = asyncio.run
        if args.loop != "asyncio":
            try:
                import uvloop  # a third of asyncio's cost per write

                run = uvloop.run
            except ImportError:
                if args.loop == "uvloop":
                    raise UserError("uvloop is not installed: pip install uvloop, or use --loop asyncio.") from None
        run(serve(args))

    return exit_status(prog, body)


def start_server(
    port: int = 0,
    *,
    log: str | Path,
    host: str = "127.0.0.1",
    ttft_ms: float = 50.0,
    itl_ms: float = 20.0,
    tokens_per_chunk: int = 1,
    model: str = "calibration",
    max_model_len: int = 131072,
    cpu: int | str | None = None,
    loop: str = "auto",
    timeout: float = 30.0,
    faults: str = "",
    exit_after: int | None = None,
    usage_scale: float = 1.0,
    processes: int = 1,
    ttft_per_stream_ms: float = 0.0,
    itl_per_stream_ms: float = 0.0,
    reasoning_tokens: int = 0,
    reasoning_field: str = "reasoning_content",
    hang_first: int = 0,
) -> subprocess.Popen:
    """Start the server in a subprocess and return once it printed its ready line.

    port=0 picks a free port; the returned Popen carries `.port` and `.base_url`.
    cpu=N pins the server to that core with `taskset -c N` ("0-3": those cores, one per process
    with processes=4: --processes, SO_REUSEPORT). Stop it with stop_server().
    faults / exit_after: the --faults and --exit-after options (bench.lab.calibration_faults);
    usage_scale: --usage-scale (the usage lies by that factor, /metrics does not);
    ttft_per_stream_ms / itl_per_stream_ms: the slope of a server that slows with load;
    reasoning_tokens / reasoning_field: --reasoning-tokens / --reasoning-field; hang_first: --hang-first.
    """
    cmd = [
        sys.executable,
        "-m",
        "bench.lab.calibration",
        "--host",
        host,
        "--port",
        str(port),
        "--ttft-ms",
        str(ttft_ms),
        "--itl-ms",
        str(itl_ms),
        "--tokens-per-chunk",
        str(tokens_per_chunk),
        "--log",
        str(log),
        "--model",
        model,
        "--max-model-len",
        str(max_model_len),
        "--loop",
        loop,
        "--faults",
        faults,
    ]
    cmd += ["--exit-after", str(exit_after)] if exit_after else []
    cmd += ["--usage-scale", str(usage_scale)] if usage_scale != 1.0 else []
    cmd += ["--processes", str(processes)] if processes > 1 else []
    if ttft_per_stream_ms or itl_per_stream_ms:
        cmd += ["--ttft-per-stream-ms", str(ttft_per_stream_ms), "--itl-per-stream-ms", str(itl_per_stream_ms)]
    cmd += (
        ["--reasoning-tokens", str(reasoning_tokens), "--reasoning-field", reasoning_field] if reasoning_tokens else []
    )
    cmd += ["--hang-first", str(hang_first)] if hang_first else []
    if cpu is not None:
        cmd = ["taskset", "-c", str(cpu)] + cmd
    root = str(ROOT)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env, text=True)
    # Wait for the ready line (or for the process to die), never for a fixed time.
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else ""
    if not line.startswith(READY):
        stop_server(proc)
        raise UserError(
            f"the calibration server did not start (exit {proc.returncode}); "
            f"its message is above, its command was: {' '.join(cmd)}"
        )
    proc.base_url = line[len(READY) :].strip()
    proc.port = int(proc.base_url.rsplit(":", 1)[1])
    return proc


def stop_server(proc: subprocess.Popen, timeout: float = 10.0) -> int:
    """SIGTERM, then wait; the log holds every request by the time this returns."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout:
        proc.stdout.close()
    return proc.returncode


# ---- reading the log -----------------------------------------------------------------------


def read_log(path: str | Path) -> dict[str, dict]:
    """The server log as {request id: entry}; the module docstring lists the fields. A server of
    several processes (--processes) logged to one file each: they are read together."""
    out = {}
    for part in calibration_fleet.log_files(path):
        _read_log_file(part, out)
    return out


def _read_log_file(path: Path, out: dict[str, dict]) -> None:
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                entry = orjson.loads(line)
                if "due" not in entry and "due_first" in entry:  # logs before 2026-11-30 list it themselves
                    first, step = entry["due_first"], entry["due_step"]
                    entry["due"] = [first + i * step for i in range(len(entry["sent"]))]  # as planned
                out[entry["id"]] = entry


def send_lag_stats(log_path: str | Path) -> dict:
    """The server's own lateness (sent - due) over every chunk it sent, in ms."""
    import numpy as np

    lags = [s - d for e in read_log(log_path).values() for d, s in zip(e.get("due", ()), e.get("sent", ()))]
    if not lags:
        return {"chunks": 0, "mean_ms": None, "p50_ms": None, "p99_ms": None, "max_ms": None}
    a = np.asarray(lags) * 1e3
    return {
        "chunks": len(lags),
        "mean_ms": float(a.mean()),
        "p50_ms": float(np.percentile(a, 50)),
        "p99_ms": float(np.percentile(a, 99)),
        "max_ms": float(a.max()),
    }


if __name__ == "__main__":
    sys.exit(main())
