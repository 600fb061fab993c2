"""What one request costs this client: many 2-token requests against the calibration server.

The server answers at once (TTFT 0, ITL 0) and runs on its own core; the client runs `measure()`
in this process on another, so its CPU while sending, divided by the requests, is the cost of a
request beyond its chunks (two here). `--profile` adds cProfile's top functions, to see where
the time goes (the profiler itself roughly doubles the cost; read the shares, not the totals).
`--floor` runs, before each of ours, the least any client on this host can spend on the same
requests: one loop with no event loop and no parsing that sends a request, rests a millisecond
between polls and reads until each answer's end (send and recv, their kernel work and nothing else).

    python -m bench.lab.requestcost --requests 20000 --concurrency 64 [--floor] [--profile]
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import os
import pstats
import select
import socket
import sys
import tempfile
import time
from pathlib import Path

from bench.errors import UserError, exit_status
from bench.instrument import spec
from bench.instrument.client import RawTransport
from bench.instrument.measure import measure
from bench.instrument.reader import END
from bench.lab.calibration import start_server, stop_server
from bench.paths import TINY_MODEL


@contextlib.contextmanager
def answering_server(server_cpu: int, client_cpu: int):
    """A calibration server that answers at once, on `server_cpu`, and this process on `client_cpu`
    meanwhile; yields (server, a scratch folder). Both runs, ours and the bare loop's, stand on it."""
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(0, log=Path(tmp) / "server.jsonl", ttft_ms=0, itl_ms=0, cpu=server_cpu)
        before = os.sched_getaffinity(0)
        try:
            os.sched_setaffinity(0, {client_cpu})
            yield server, tmp
        finally:
            os.sched_setaffinity(0, before)
            stop_server(server)


def cost(requests: int, concurrency: int, workers: int, profile: bool, server_cpu: int, client_cpu: int) -> dict:
    """Client CPU per request (us) of one run; prints the profile's top functions when asked."""
    with answering_server(server_cpu, client_cpu) as (server, tmp):
        argv = ["--base-url", f"{server.base_url}/v1", "--tokenizer", str(TINY_MODEL), "--no-progress"]
        argv += ["--concurrency", str(concurrency), "--num-prompts", str(requests), "--input-len", "16"]
        argv += ["--output-len", "2", "--scrape-interval", "0", "--gpu-ids", "none", "--out", f"{tmp}/run"]
        run = spec.parse([*argv, "--workers", str(workers)])
        prof = cProfile.Profile() if profile else None
        if prof:
            prof.enable()
        summary = measure(run).summary
        if prof:
            prof.disable()
            pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(25)
    n = summary["completed"] + summary["failed"] + summary["interrupted"]
    return {
        "requests": n,
        "failed": summary["failed"],
        "client_cpu_s": summary["client_cpu_s"],
        "us_per_request": 1e6 * summary["client_cpu_s"] / n,
        "encode_us_per_request": 1e6 * summary["client_encode_cpu_s"] / n,  # before timing, not in the above
        "p99_send_lag_ms": summary["p99_send_lag_ms"],
    }


def floor_cost(requests: int, concurrency: int, server_cpu: int, client_cpu: int) -> float:
    """Client CPU per request (us) of the bare loop: the same 2-token requests, sent and read."""
    with answering_server(server_cpu, client_cpu) as (server, _):
        body = {"model": "calibration", "prompt": "x " * 16, "max_tokens": 2, "stream": True}
        body["stream_options"] = {"include_usage": True, "continuous_usage_stats": True}
        request = RawTransport(f"{server.base_url}/v1", "completions", {}).prepare(body, "floor")
        socks = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(concurrency)]
        try:
            poll, by_fd = select.epoll(), {s.fileno(): s for s in socks}
            for s in socks:
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                s.setblocking(False)
                poll.register(s.fileno(), select.EPOLLIN)
            cpu, sent, done = time.process_time(), 0, 0
            for s in socks:
                s.send(request)
                sent += 1
            while done < requests:
                time.sleep(1e-3)  # as the client rests between polls under load
                for fd, _ in poll.poll(0):
                    data = by_fd[fd].recv(1 << 16)
                    if not data:  # a closed connection would be polled ready forever
                        raise UserError("the calibration server closed a connection during the bare loop's run")
                    if data.endswith(END):
                        done += 1
                        if sent < requests:
                            by_fd[fd].send(request)
                            sent += 1
            return 1e6 * (time.process_time() - cpu) / requests
        finally:
            for s in socks:
                s.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.lab.requestcost", description=__doc__)
    p.add_argument("--requests", type=int, default=20000, help="Requests to send (2 output tokens each).")
    p.add_argument("--concurrency", type=int, default=64, help="Streams in flight.")
    p.add_argument("--workers", type=int, default=1, help="Client worker processes.")
    p.add_argument("--runs", type=int, default=3, help="Runs, one after the other (the cost is the median).")
    p.add_argument("--floor", action="store_true", help="Also run the bare send-and-read loop before each run.")
    p.add_argument("--profile", action="store_true", help="Print cProfile's top functions of the last run.")
    p.add_argument("--server-cpu", type=int, default=0, help="Core for the calibration server.")
    p.add_argument("--client-cpu", type=int, default=1, help="Core for this client.")
    args = p.parse_args(argv)

    def body() -> None:
        rows, floors = [], []
        for i in range(args.runs):
            last = i == args.runs - 1
            if args.floor:
                floors.append(floor_cost(args.requests, args.concurrency, args.server_cpu, args.client_cpu))
                print({"floor_us_per_request": round(floors[-1], 2)}, file=sys.stderr, flush=True)
            rows.append(
                cost(
                    args.requests,
                    args.concurrency,
                    args.workers,
                    args.profile and last,
                    args.server_cpu,
                    args.client_cpu,
                )
            )
            print(rows[-1], file=sys.stderr, flush=True)
        us = sorted(r["us_per_request"] for r in rows)
        each = ", ".join(f"{u:.1f}" for u in us)
        print(f"client CPU per request: {us[len(us) // 2]:.1f} us (median of {len(us)}: {each})")
        if floors:
            ratios = [r["us_per_request"] / f for r, f in zip(rows, floors)]  # in run order, as each pair ran
            floors.sort()
            print(
                f"bare send-and-read loop (the floor): {floors[len(floors) // 2]:.1f} us "
                f"({', '.join(f'{f:.1f}' for f in floors)}); this client / floor, run by run: "
                f"{', '.join(f'{r:.2f}' for r in ratios)}"
            )

    return exit_status("python -m bench.lab.requestcost", body)


if __name__ == "__main__":
    sys.exit(main())
