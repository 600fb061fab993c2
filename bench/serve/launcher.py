"""Start a server in the background, wait until it answers, stop it by PID.

Used by the CPU engine recipes, the test fixtures and the layouts that run several processes
(prefill/decode disaggregation: prefill servers, decode servers, a router). State lives in
`.run/<name>.pid` and `.run/<name>.log` under the project folder, so a stop finds exactly the
process it started (never a `pkill` by name) and a second start says the server is already up.
A process started with `--group G` is named `G.<name>`, its command line is added to
`.run/G.commands`, and `stop --group G` stops every member, the last started first; a member
that fails to start stops the members started before it, so a layout is up whole or not at all. What cannot go on
(a busy port, a server that dies or never answers, a stop with nothing to stop) is one
`python -m bench.serve.launcher: ...` sentence on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from bench.errors import UserError, exit_status
from bench.paths import RUN_DIR

PROG = "python -m bench.serve.launcher"
SAY_EVERY = 15.0  # seconds between "still waiting" lines while a server starts


class LaunchError(UserError):
    """A start or stop that cannot go on; the message is one sentence for the user."""


def pid_file(name: str) -> Path:
    return RUN_DIR / f"{name}.pid"


def log_file(name: str) -> Path:
    return RUN_DIR / f"{name}.log"


def commands_file(group: str) -> Path:
    return RUN_DIR / f"{group}.commands"


def members(group: str) -> list[str]:
    """The group's members with a pid file, in the order they were started."""
    try:
        lines = commands_file(group).read_text().splitlines()
    except OSError:
        lines = []
    started = [line.split(":", 1)[0] for line in lines]
    return [m for m in started if pid_file(m).exists()]


def stop_group(group: str, grace: float = 30.0) -> list[int]:
    """Stop every member of `group`, the last started first (the front door before its servers)."""
    names = members(group)
    if not names:
        raise LaunchError(f"no process of group {group} is running (nothing listed in {commands_file(group)})")
    pids = []
    for name in reversed(names):
        with contextlib.suppress(LaunchError):  # a member that died on its own is already stopped
            pids.append(stop(name, grace))
    commands_file(group).unlink(missing_ok=True)
    return pids


def running_pid(name: str) -> int | None:
    """PID from the pid file if that process is still alive, else None (stale files removed)."""
    path = pid_file(name)
    try:
        pid = int(path.read_text().strip())
        os.kill(pid, 0)
        return pid
    except (FileNotFoundError, ValueError, ProcessLookupError):
        path.unlink(missing_ok=True)
        return None


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # as servers bind: connections of an earlier server in TIME_WAIT do not make it busy
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return False
        except OSError:
            return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _raise_fd_limit() -> None:
    # Engines open one socket per stream; a soft limit of 1024 fails at high concurrency.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def start(
    name: str,
    command: list[str],
    host: str,
    port: int,
    timeout: float,
    ready_path: str = "/health",
    about: str | None = None,
    log: Path | None = None,
) -> int:
    """Launch `command` detached, wait until http://host:port<ready_path> answers 200 (a start
    usually takes `about`, said while waiting). Its output goes to `log` (default .run/<name>.log)."""
    pid = running_pid(name)
    if pid is not None:
        raise LaunchError(f"{name} is already running (pid {pid}); stop it first with the matching stop recipe")
    if port_in_use(host, port):
        raise LaunchError(f"port {port} on {host} is already in use by another program; choose another port")
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    print("+ " + shlex.join(command), file=sys.stderr, flush=True)
    log = log or log_file(name)
    with open(log, "ab") as out:
        try:
            proc = subprocess.Popen(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_raise_fd_limit,
            )
        except OSError as e:
            raise LaunchError(
                f"cannot run {command[0]}: {e.strerror or e}; check the server command after --"
            ) from None
    pid_file(name).write_text(f"{proc.pid}\n")
    usually = f", usually {about}" if about else ""
    print(
        f"started {name}; waiting until http://{host}:{port}{ready_path} answers{usually}", file=sys.stderr, flush=True
    )
    try:
        _wait_until_ready(name, proc, f"http://{host}:{port}{ready_path}", timeout, log)
    except KeyboardInterrupt:
        with contextlib.suppress(LaunchError):  # already gone
            stop(name)  # Ctrl-C while waiting: leave no half-started server behind
        raise
    print(f"{name} ready on http://{host}:{port} (pid {proc.pid}, log {log})", file=sys.stderr)
    return proc.pid


def _wait_until_ready(name: str, proc: subprocess.Popen, url: str, timeout: float, log: Path) -> None:
    started = time.monotonic()
    deadline, said = started + timeout, started
    while not _answers(url):
        if time.monotonic() - said >= SAY_EVERY:  # a long start says it is still going
            said = time.monotonic()
            print(f"  waiting for {name} ({said - started:.0f} s; log {log})", file=sys.stderr, flush=True)
        if proc.poll() is not None:
            pid_file(name).unlink(missing_ok=True)
            tail = _tail(log)
            raise LaunchError(
                f"{name} exited during start-up with status {proc.returncode}; its log is {log}"
                + (f", ending:\n{tail}" if tail else "")
            )
        if time.monotonic() > deadline:
            stop(name)
            raise LaunchError(f"{name} did not answer {url} within {timeout:.0f} s; see {log}")
        time.sleep(0.5)  # polling a readiness endpoint, not synchronising on time


def stop(name: str, grace: float = 30.0) -> int:
    """SIGTERM the process group from the pid file, SIGKILL after `grace` seconds."""
    pid = running_pid(name)
    if pid is None:
        raise LaunchError(f"{name} is not running (no live process in {pid_file(name)})")
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while _alive_group(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive_group(pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    pid_file(name).unlink(missing_ok=True)
    print(f"{name} stopped (pid {pid})", file=sys.stderr)
    return pid


def _alive_group(pgid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pgid, os.WNOHANG)  # reap the leader if it is our own child, or it lingers as a zombie
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__)
    sub = p.add_subparsers(dest="action", required=True)
    s = sub.add_parser("start", help="Start a server command in the background and wait for readiness.")
    s.add_argument("--name", required=True, help="Name for the pid and log files, e.g. cpu-engine-8000.")
    s.add_argument("--host", default="127.0.0.1", help="Address the server listens on.")
    s.add_argument("--port", type=int, required=True, help="Port the server listens on.")
    s.add_argument("--timeout", type=float, default=300, help="Seconds to wait for readiness.")
    s.add_argument("--ready-path", default="/health", help="Path that answers 200 once ready.")
    s.add_argument("--about", help="How long a start usually takes, said while waiting, e.g. '40 s'.")
    s.add_argument("--engine", help="Engine name recorded for bench run's manifest.")
    s.add_argument("--label", help="Engine label recorded for bench run's manifest.")
    s.add_argument("--version", help="Engine version recorded for bench run's manifest.")
    s.add_argument("--model", help="Model recorded for bench run's manifest.")
    s.add_argument("--gpus", type=int, default=0, help="GPUs behind this server (all of its group's), recorded.")
    s.add_argument(
        "--group",
        help="Layout this process belongs to (e.g. sglang-pd): start every process of a multi-process "
        "layout with the same group, the front door last, and stop them together with `stop --group`.",
    )
    s.add_argument("command", nargs=argparse.REMAINDER, help="The server command, after --.")
    t = sub.add_parser("stop", help="Stop a server started with `start`, by its pid file.")
    which = t.add_mutually_exclusive_group(required=True)
    which.add_argument("--name", help="The name given to `start`.")
    which.add_argument("--group", help="Stop every process started with this --group, the last started first.")
    return p


def run(args: argparse.Namespace) -> None:
    if args.action == "stop":
        stop_group(args.group) if args.group else stop(args.name)
        return
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise LaunchError("no server command given after --")
    name = f"{args.group}.{args.name}" if args.group else args.name
    try:
        pid = start(name, command, args.host, args.port, args.timeout, args.ready_path, args.about)
    except LaunchError:
        if args.group and members(args.group):
            print(f"stopping the rest of group {args.group}", file=sys.stderr)
            stop_group(args.group)
        raise
    if args.group:
        with open(commands_file(args.group), "a") as f:
            f.write(f"{name}: {shlex.join(command)}\n")
    if args.engine:
        from bench.instrument import served

        # with the pid, a record outlives its server by nothing: read() forgets it
        served.write(
            port=args.port,
            engine=args.engine,
            label=args.label or args.engine,
            version=args.version,
            model=args.model,
            gpus=args.gpus,
            # a group's record holds every member's command line, one per line, in start order
            command=commands_file(args.group).read_text().rstrip("\n") if args.group else shlex.join(command),
            pid=pid,
        )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return exit_status(PROG, lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
