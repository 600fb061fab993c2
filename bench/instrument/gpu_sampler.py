"""The GPU sampler: power, energy, clocks, utilisation and throttling of the chosen GPUs into RUN/gpu.jsonl.

    python -m bench.instrument.gpu_sampler --out RUN/gpu.jsonl --interval 0.1 [--ids 0,1] --client PID

It runs in a process of its own, so NVML calls (or nvidia-smi's lines) never stall the client's
event loop. `measure()` drives it through `GpuSampler`: started before the warm-up, SIGUSR1 when
the measured phase begins (the phase of later lines), SIGTERM after the last request.
Each line of gpu.jsonl is one JSON object:
  {"kind": "devices", "t", "source", "driver", "interval_s", "gpus": [{"index", "name", "uuid",
      "power_limit_w", "default_power_limit_w", "max_sm_clock_mhz", "max_mem_clock_mhz",
      "memory_total_mib"}]}: the first line; source "nvml" or "nvidia-smi".
  {"kind": "sample", "t", "phase", "gpus": [one dict per GPU, bench.instrument.gpu's fields]}
      t: time.perf_counter() (CLOCK_MONOTONIC, shared by all processes, so it lines up with the
      records and the manifest's t0), the middle of the read; phase "warmup", "measure", or
      "after" for the last sample(s), taken once SIGTERM came, so the samples span the window.
      NVML: every chosen GPU per line; nvidia-smi: one GPU per line, stamped when it arrived.
  {"kind": "info", "t", "message"}: something went wrong while sampling (the first time only).
  {"kind": "cost", "samples", "interval_s", "cpu_s", "loop_cpu_s", "loop_wall_s", "children_cpu_s",
      "cpu_percent"}: the last line; cpu_percent = (loop_cpu_s + children_cpu_s) / loop_wall_s,
      this process's CPU while sampling (start-up left out: cpu_s has it) plus nvidia-smi's.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import resource
import select
import shutil
import signal
import sys
import time
from pathlib import Path

from bench.instrument import gpu, served
from bench.instrument.companion import Companion, leave_clients_cores

SIGNALS = {signal.SIGUSR1, signal.SIGTERM, signal.SIGINT}


COUNTER_EVERY_S = 1.0  # seconds between reads of NVML's energy counter (~4 ms of CPU each on an H200)


class Loop:
    """The sampler's side: a sample every `interval`, the phase switched by the parent's signals."""

    def __init__(self, source, out: Path, interval: float, client: int):
        self.source, self.interval, self.client = source, interval, client
        self.file = open(out, "a", buffering=1)  # one line at a time, each on disk as written
        self.phase = "warmup"
        self.samples = 0
        self.noted = False
        self.stopping = False

    def write(self, obj: dict) -> None:
        self.file.write(json.dumps(obj, separators=(",", ":")) + "\n")
        if obj["kind"] == "sample" and not self.samples:  # the parent goes on once a sample is in
            print(f"{os.getpid()} ready", flush=True)

    def info(self, message: str) -> None:
        if not self.noted:
            self.noted = True
            self.write({"kind": "info", "t": time.perf_counter(), "message": message})

    def signals(self, wait: float) -> None:
        """Wait up to `wait` s for the parent's signal and act on it."""
        got = signal.sigtimedwait(SIGNALS, max(0.0, wait))
        if got is None:
            return
        if got.si_signo == signal.SIGUSR1:
            self.phase = "measure"
        elif got.si_signo == signal.SIGTERM:
            self.stopping = True

    def tick_nvml(self, counter: bool = True) -> None:
        start = time.perf_counter()
        gpus = self.source.sample(counter)
        t = (start + time.perf_counter()) / 2
        self.write({"kind": "sample", "t": round(t, 6), "phase": self.phase, "gpus": gpus})
        self.samples += 1
        for g in gpus:
            if "error" in g:
                self.info(f"GPU {g['index']} could not be read: {g['error']}")

    def sample_nvml(self) -> None:
        due = time.perf_counter()
        # The energy counter about once a second, and at the first sample of every phase, so the
        # measured window starts and ends on counter reads.
        every, n, phase = max(1, round(COUNTER_EVERY_S / self.interval)), 0, None
        while not self.stopping and served.process_alive(self.client):
            self.tick_nvml(counter=n % every == 0 or self.phase != phase)
            n, phase = n + 1, self.phase
            due = max(due + self.interval, time.perf_counter())  # a slow read skips the slots it overran
            self.signals(due - time.perf_counter())
        if self.stopping:  # one more, after the last request ended, so the samples span the window
            self.phase = "after"
            self.tick_nvml()

    def sample_smi(self) -> None:
        self.source.start(self.interval)
        fd, buf = self.source.proc.stdout.fileno(), b""
        ids, stopped_at, after = set(self.source.ids), None, set()
        while served.process_alive(self.client):
            if self.stopping and stopped_at is None:
                stopped_at, self.phase = time.perf_counter(), "after"
            # Once stopped, read on until every GPU has a line from after the stop (at most 3 intervals).
            if stopped_at is not None and (after >= ids or time.perf_counter() > stopped_at + 3 * self.interval):
                break
            ready, _, _ = select.select([fd], [], [], self.interval)
            t = time.perf_counter()
            if ready:
                data = os.read(fd, 65536)
                if not data:
                    self.info("nvidia-smi stopped printing samples; the run goes on without them")
                    break
                *lines, buf = (buf + data).split(b"\n")
                for line in lines:
                    got = gpu.parse_smi_line(line.decode(errors="replace"))
                    if got is not None:
                        self.write({"kind": "sample", "t": round(t, 6), "phase": self.phase, "gpus": [got]})
                        self.samples += 1
                        if stopped_at is not None:
                            after.add(got["index"])
            self.signals(0)

    def run(self) -> None:
        try:
            devices = self.source.devices()
        except Exception as e:  # noqa: BLE001 -- a name or limit we cannot read must not cost the samples
            devices = {"source": self.source.name, "driver": None, "gpus": [], "error": str(e)}
        self.write({"kind": "devices", "t": time.perf_counter(), "interval_s": self.interval, **devices})
        cpu0, wall0 = time.process_time(), time.perf_counter()
        try:
            if isinstance(self.source, gpu.Nvml):
                self.sample_nvml()
            else:
                self.sample_smi()
        finally:
            self.source.close()
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        child_cpu = children.ru_utime + children.ru_stime
        self.write(
            {
                "kind": "cost",
                "samples": self.samples,
                "interval_s": self.interval,
                "cpu_s": round(time.process_time(), 4),
                "loop_cpu_s": round(cpu, 4),
                "loop_wall_s": round(wall, 4),
                "children_cpu_s": round(child_cpu, 4),
                "cpu_percent": round(100 * (cpu + child_cpu) / wall, 3) if wall > 0 else None,
            }
        )
        self.file.close()


def parse_ids(text: str) -> list[int] | None:
    """ "all" -> None (every visible GPU), "0,2,3" -> [0, 2, 3]; ValueError otherwise."""
    if text == "all":
        return None
    ids = [int(x) for x in text.split(",") if x.strip()]
    if not ids or any(i < 0 for i in ids):
        raise ValueError(text)
    return ids


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.instrument.gpu_sampler", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, type=Path, help="gpu.jsonl to append to (created once a GPU answers).")
    p.add_argument("--interval", type=float, default=0.1, help="Seconds between samples.")
    p.add_argument("--ids", default="all", help="GPU indices, comma-separated, or all.")
    p.add_argument("--client", type=int, default=os.getppid(), help="The client's pid: gone, this ends too.")
    args = p.parse_args(argv)
    # As the scraper: signals wait until asked for, and SIGINT is the parent's to act on.
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    leave_clients_cores()
    try:
        source = gpu.open_source(parse_ids(args.ids))
    except gpu.NoGpu as e:
        print(f"{os.getpid()} info: no GPU telemetry ({e})", flush=True)
        return 0
    Loop(source, args.out, args.interval, args.client).run()
    return 0


def nvidia_present() -> bool:
    """A cheap first look, in the client: NVML's library loads, or nvidia-smi is on PATH."""
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
        return True
    except OSError:
        return shutil.which("nvidia-smi") is not None


class GpuSampler(Companion):
    """The client's handle: start() before the warm-up, measuring() as the measured phase begins,
    stop() after the last request. Without a GPU, or when the sampler fails, the run goes on: one
    line on stderr says why, and the summary holds no GPU keys (bench.instrument.companion)."""

    what = "GPU sampler"

    def __init__(self, out: Path, interval: float, ids: list[int] | None, off: bool = False):
        super().__init__()
        self.out, self.interval, self.ids, self.off = out, interval, ids, off or interval <= 0

    def start(self) -> None:
        if self.off:
            return
        if not nvidia_present():
            return self._say("info", "no NVIDIA GPU visible (no NVML library, no nvidia-smi); no GPU telemetry")
        ids = "all" if self.ids is None else ",".join(map(str, self.ids))
        cmd = [sys.executable, "-m", "bench.instrument.gpu_sampler", "--out", str(self.out)]
        cmd += ["--interval", str(self.interval), "--ids", ids, "--client", str(os.getpid())]
        first = self._launch(
            cmd, "gpu", 60.0, starting="GPU telemetry: starting the sampler (NVML set-up takes up to a few seconds)"
        )
        if first is None:
            return
        pid, said = first
        self.pid = int(pid) if pid.isdigit() and said == "ready" else 0
        if said.startswith("info: "):
            self._say("info", said[len("info: ") :])
        elif said != "ready":
            self._gone("did not start")

    def measuring(self) -> None:
        if self.pid:
            self._signal(signal.SIGUSR1)

    def stop(self) -> dict | None:
        """SIGTERM, wait, and the summary's "gpu_sampler" block from the cost line; None when
        there is no gpu.jsonl (off, or no GPU)."""
        self._terminate()
        if not self.out.is_file():
            return None
        lines = read_lines(self.out)
        cost = next((x for x in reversed(lines) if x.get("kind") == "cost"), None)
        devices = next((x for x in lines if x.get("kind") == "devices"), {})
        if cost is None and not self.message:
            self._gone("ended without its cost line")
        keys = ("samples", "interval_s", "loop_cpu_s", "loop_wall_s", "children_cpu_s", "cpu_percent")
        return {"source": devices.get("source"), **{k: (cost or {}).get(k) for k in keys}, "info": self.message}


def read_lines(path: Path) -> list[dict]:
    """Every whole line of a gpu.jsonl (a line cut off by a kill is left out)."""
    out = []
    try:
        text = path.read_text()
    except OSError:
        return out
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            out.append(json.loads(line))
    return out


if __name__ == "__main__":
    sys.exit(main())
