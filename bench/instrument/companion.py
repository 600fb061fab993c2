"""A helper process of a run (the telemetry scraper, the GPU sampler), seen from the client.

It is started through `sh -c '... &'`, so it is not the client's child: a child's CPU, once
reaped, is added to its parent's in wait4() and `time`, which is how `just bench-client` weighs
the client. It answers on a pipe: a first line "<pid> ready" (or "<pid> info: ..."), later
lines as its protocol has them, and the pipe's end (EOF) says it exited. One that fails never
fails the run: it says so in one line on stderr, once, and the run goes on.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time

from bench import paths


class Companion:
    """The parent's side: launch, read its lines, signal it, wait for its end, give up on it."""

    what = "helper"  # how notes name it: "the <what> did not start; ..."

    def __init__(self) -> None:
        self.pid = 0  # the helper's; 0 when none runs
        self.pipe = None  # its stdout
        self.message: str | None = None  # why there is none of its data, when there is none

    def _launch(self, cmd: list[str], name: str, timeout: float, starting: str = "") -> tuple[str, str] | None:
        """Start `cmd` detached and read its first line: (pid, what it said); None when it could not start."""
        env = dict(
            os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(paths.ROOT), os.environ.get("PYTHONPATH")]))
        )
        try:
            shell = subprocess.Popen(
                ["/bin/sh", "-c", '"$@" &', name, *cmd], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env
            )
            shell.wait()  # at once: the shell only starts the helper in the background
        except OSError as e:
            self._say("note", f"the {self.what} did not start ({e}); the run goes on without it")
            return None
        self.pipe = shell.stdout
        if starting:
            print(starting, file=sys.stderr)
        pid, _, said = self._line(timeout).partition(" ")
        return pid, said

    def _terminate(self) -> None:
        """SIGTERM, and wait up to 15 s for the pipe's end (the helper writes its cost line first)."""
        if self.pid:
            self._signal(signal.SIGTERM)
            if not self._ended(15.0):
                self._gone("did not stop in 15 s")
        if self.pipe is not None:
            self.pipe.close()

    def _line(self, timeout: float) -> str:
        ready, _, _ = select.select([self.pipe], [], [], timeout)
        return self.pipe.readline().decode().strip() if ready else ""

    def _ended(self, timeout: float) -> bool:
        """Wait for the pipe's end: the helper has exited."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([self.pipe], [], [], left)
            if ready and not self.pipe.readline():
                self.pid = 0
                return True
        return False

    def _signal(self, signum: int) -> None:
        with contextlib.suppress(OSError):  # gone already: the next answer says so
            os.kill(self.pid, signum)

    def _gone(self, what: str) -> None:
        if self.pid:
            self._signal(signal.SIGKILL)
            self.pid = 0
        self._say("note", f"the {self.what} {what}; the run goes on without it")

    def _say(self, kind: str, message: str) -> None:
        if self.message is None:  # once per run
            self.message = message
            print(f"{kind}: {message}", file=sys.stderr)


def leave_clients_cores() -> None:
    """In the helper: move off a pinned client's cores (just bench-client pins it with taskset, and
    the helper inherits that), where each of its reads would take CPU from the client."""
    others = set(range(os.cpu_count() or 1)) - os.sched_getaffinity(0)
    if others:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, others)
