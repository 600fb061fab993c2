"""`bench` command line: one sub-command per module, each with add_arguments() and main().

The only place that knows every sub-command; each command module sits on top of the wings
(bench.run on the instrument, the others in results) and is imported only when it is asked for.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from bench import __version__
from bench.errors import exit_status

# name -> (module, one-line help). Each module is imported only when its command is built.
SUBCOMMANDS = {
    "run": ("bench.run", "Measure one load point against a server and write a run folder."),
    "campaign": ("bench.results.campaign", "Sweep scenarios x load points against a server, resumable."),
    "report": ("bench.results.report", "Print comparison tables from a tree of run folders."),
    "plot": ("bench.results.plot", "Draw latency/throughput plots next to the run folders."),
    "import": ("bench.results.importer", "Import result JSON written by vLLM's benchmark into run folders."),
    "summarize": ("bench.results.summarize", "Rebuild a run's summary.json from its records (after kill -9)."),
    "check": ("bench.results.check", "Print the checks of runs: prefix cache, preemptions, queueing, tokens, ..."),
    "matrix": (
        "bench.results.matrix",
        "Run every cell (serve recipe x scenario set) of a matrix file, here or on Slurm.",
    ),
}


class _Parser(argparse.ArgumentParser):
    """argparse with bad flags said as every other error is: one line, `bench <command>: ...`,
    naming where the flags are described, exit 2 (argparse prints its usage block first)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message}; see `{self.prog} --help`\n")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with `only`, just that sub-command's module is imported (faster start)."""
    parser = _Parser(prog="bench", description=__doc__)
    parser.add_argument("--version", action="version", version=f"bench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if only in (None, name):
            mod = importlib.import_module(module)
            mod.add_arguments(p)
            p.set_defaults(_main=mod.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    only = argv[0] if argv and argv[0] in SUBCOMMANDS else None
    parser = build_parser(only)
    args, rest = parser.parse_known_args(argv)
    # A command with a `words` positional (campaign's key=value words) also takes the words that
    # follow a flag, which argparse leaves over; any other leftover is an error, as parse_args says.
    if rest and (not hasattr(args, "words") or any(w.startswith("-") for w in rest)):
        prog = f"bench {args.command}"
        parser.exit(2, f"{prog}: unrecognized arguments: {' '.join(rest)}; see `{prog} --help`\n")
    if rest:
        args.words = [*args.words, *rest]
    args.argv = ["bench", *argv]  # what was asked, for the manifest (also when called in-process)
    return exit_status(f"bench {args.command}", lambda: args._main(args))


if __name__ == "__main__":
    sys.exit(main())
