"""The calibration server on several processes sharing one port (`--processes N`).

At C=8,192 one server process cannot send 400,000 chunks a second on time, so N processes each
bind the same port with SO_REUSEPORT and the kernel deals new connections among them. The
first process is the one started; it binds first (so port 0 still picks a port), starts the
others on that port, each pinned to a core of its own where the allowed cores suffice, and
says it is ready once they all are; stopping it stops them. Each process logs its own requests,
process i > 0 to <log stem>.<i><suffix> (calib.jsonl, calib.1.jsonl, ...); `log_files` names
them all and read_log merges them. Each process counts only what it served itself on /metrics.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
from pathlib import Path


def log_file(log: Path, index: int) -> Path:
    """Process `index`'s log: the given one for the first, a numbered sibling for the others."""
    return log if index == 0 else log.with_name(f"{log.stem}.{index}{log.suffix}")


def log_files(log: str | Path) -> list[Path]:
    """Every process's log of a server logging to `log` (just `log` for one process)."""
    log = Path(log)
    files = [log]
    while (nxt := log_file(log, len(files))).exists():
        files.append(nxt)
    return files


def cores(n: int) -> list[int | None]:
    """A core of its own for each of `n` processes when this process may use that many; else None."""
    allowed = sorted(os.sched_getaffinity(0))
    return list(allowed[:n]) if n <= len(allowed) else [None] * n


def remove_stale_logs(log: Path, n: int) -> None:
    """Remove numbered logs from process `n` on, left by an earlier, larger server: read_log would
    merge them into this one's."""
    while log_file(log, n).exists():
        log_file(log, n).unlink()
        n += 1


def start_others(argv: list[str], log: Path, port: int, n: int, ready: str, timeout: float = 30.0):
    """Start processes 1..n-1 of a server started with `argv`, on `port`; return once each printed
    its ready line (the Popen list), or raise RuntimeError naming the one that did not."""
    procs = []
    where = cores(n)
    try:
        for i in range(1, n):
            core = where[i]
            cmd = [sys.executable, "-m", "bench.lab.calibration", *argv, "--port", str(port)]
            cmd += ["--log", str(log_file(log, i)), "--processes", "1", "--reuse-port"]
            proc = subprocess.Popen(
                cmd,
                stdout=subprocess.PIPE,
                text=True,
                preexec_fn=(lambda c=core: os.sched_setaffinity(0, {c})) if core is not None else None,
            )
            procs.append(proc)
            got, _, _ = select.select([proc.stdout], [], [], timeout)
            if not (got and proc.stdout.readline().startswith(ready)):
                raise RuntimeError(f"calibration server process {i} did not start (exit {proc.poll()})")
    except BaseException:
        stop_others(procs)
        raise
    if where[0] is not None:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {where[0]})
    return procs


def stop_others(procs: list[subprocess.Popen], timeout: float = 10.0) -> None:
    """SIGTERM each, then wait: each writes its log's last lines as it stops."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()
