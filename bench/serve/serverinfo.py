"""What a serve recipe started, left in .run/serve-<port>.json for `bench run`'s manifest.

A serve recipe (scripts/*.just) calls, just before it execs the engine:
    python -m bench.serve.serverinfo write --port P --engine E --label L --version V --model M --gpus N -- CMD...
and `bench run` calls read(port) to put the engine, label and exact command in manifest["server"].
`python -m bench.serve.serverinfo format -- CMD...` prints a command as one copy-pasteable shell line.
Bad input (no command after --, a record that cannot be written) is one
`python -m bench.serve.serverinfo: ...` sentence on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys

from bench.errors import UserError, exit_status
from bench.instrument.served import path, read, write

PROG = "python -m bench.serve.serverinfo"


def format_command(argv: list[str]) -> str:
    return shlex.join(argv)


def _command(args: argparse.Namespace) -> list[str]:
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not cmd:
        raise UserError("no command given: put the server command after --")
    return cmd


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="action", required=True)
    w = sub.add_parser("write", help="Record the server command a recipe is about to exec.")
    w.add_argument("--port", type=int, required=True, help="Port the server listens on; names the record.")
    w.add_argument("--engine", required=True, help="Engine name, e.g. vllm, sglang, trtllm.")
    w.add_argument("--label", required=True, help="Engine label used in reports, e.g. vllm-tp8.")
    w.add_argument("--version", help="Engine version (or source commit) the command runs.")
    w.add_argument("--model", help="Model path or name being served.")
    w.add_argument("--gpus", type=int, help="GPUs the server uses in all, for per-GPU throughput.")
    w.add_argument(
        "--pid",
        type=int,
        default=os.getppid(),
        help="Server process id; defaults to the calling shell, which then execs the server.",
    )
    w.add_argument("command", nargs=argparse.REMAINDER, help="The server command, after --.")
    f = sub.add_parser("format", help="Print a command as one shell line, quoted where needed.")
    f.add_argument("command", nargs=argparse.REMAINDER, help="The command, after --.")
    r = sub.add_parser("read", help="Print the record for a port as JSON (nothing, exit 1, if none).")
    r.add_argument("--port", type=int, required=True, help="Port whose record to print.")
    return p


def run(args: argparse.Namespace) -> int:
    if args.action == "format":
        print(format_command(_command(args)))
    elif args.action == "write":
        command = format_command(_command(args))
        try:
            out = write(
                port=args.port,
                engine=args.engine,
                label=args.label,
                version=args.version,
                model=args.model,
                gpus=args.gpus,
                command=command,
                pid=args.pid,
            )
        except OSError as e:
            raise UserError(f"cannot write {path(args.port)}: {e.strerror or e}") from None
        print(f"recorded in {out} for bench run", file=sys.stderr)
    else:
        info = read(args.port)
        if info is None:
            return 1
        print(json.dumps(info, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return exit_status(PROG, lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
