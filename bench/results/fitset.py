"""The fit check over a scenario set: `just fit RECIPE SET`, and what `bench campaign` refuses to start.

Why this lives here: reading a set is the results wing's job (bench.results.scenarios), and the serve wing
may not import results (tests/test_layout.py), so the check itself (bench.serve.fit) takes the points as
plain data, Loads, and this module, which may import both, turns a set's points into them:
- a point's most requests in flight is its concurrency, or an open-loop point's max_concurrency; an open
  loop without a cap can have at most all its prompts in flight (said as a note, never a refusal);
- random prompts are at most input_len x (1 + range_ratio) long, and output_len x (1 + range_ratio);
- ShareGPT prompts are at most 1024 tokens and 2048 with their output (bench.instrument.workload's filter);
  a JSONL dataset's lengths are unknown until it is read, so only its concurrency is checked (so for
  ShareGPT sessions and traces); a synthetic session's longest prompt is its last turn's whole history.
`just fit RECIPE SET [ARGS]` renders the recipe's command with PRINT=1 through just, so it judges exactly
what the recipe would run (several lines for a layout of several processes), and calls
    python -m bench.results.fitset --recipe RECIPE SET -- COMMAND
which prints the servers' limits and one verdict per point of the set. Exit status: 0 when every point
fits, 1 when any would queue at the server or be rejected (points a set skips for this engine are shown,
not counted), 2 on bad input.
"""

from __future__ import annotations

import argparse
import fnmatch
import shlex
import sys
from pathlib import Path

from bench.errors import UserError, exit_status
from bench.instrument.sessions import Dist
from bench.instrument.workload import SHAREGPT_MAX_INPUT, SHAREGPT_MAX_TOTAL
from bench.results.scenarios import Point, Scenario, find_set, load_set, points
from bench.serve import fit
from bench.serve.fit import FITS, QUEUES, REJECTED, Load
from bench.serve.limits import servers

PROG = "python -m bench.results.fitset"


def load(p: Point) -> Load:
    """A point as the plain data the fit check reads."""
    s = p.scenario
    if s.dataset == "sharegpt":
        longest = (
            SHAREGPT_MAX_INPUT,
            min(SHAREGPT_MAX_TOTAL, SHAREGPT_MAX_INPUT + s.output_len) if s.output_len else SHAREGPT_MAX_TOTAL,
        )
    elif s.dataset == "sessions":
        longest = _session_longest(s)
    elif s.dataset:
        longest = (None, None)
    else:
        i = round(s.input_len * (1 + s.range_ratio))
        longest = (i, i + round(s.output_len * (1 + s.range_ratio)))
    capped = p.concurrency is not None
    return Load(s.name, p.name, p.concurrency or p.num_prompts, capped, *longest)


def _session_longest(s: Scenario) -> tuple[int | None, int | None]:
    """A synthetic session's last turn carries every earlier message and answer (the chat template's
    own tokens aside); unknown when the turns are unbounded (exp:MEAN)."""
    most = Dist.parse(s.turns or "3", "turns").most()
    if most is None:
        return None, None
    i, o = round(s.input_len * (1 + s.range_ratio)), round(s.output_len * (1 + s.range_ratio))
    n = max(1, round(most))
    return n * i + (n - 1) * o, n * (i + o)


def skipped(s: Scenario, labels: list[str]) -> str | None:
    """The pattern of the set's skip list that leaves this scenario out for any of `labels`."""
    return next((pat for pat in s.skip if any(fnmatch.fnmatchcase(x, pat) for x in labels)), None)


# bench campaign


def check_campaign(port: int | None, record: dict | None, pts: list[Point], args, max_len: int | None, say) -> None:
    """Before anything is measured: judge the planned points against the serve command recorded for the
    port; raise a UserError naming the points and the flags to change when any would be rejected, or would
    queue at the server without --allow-queueing. The dry run prints every verdict."""
    if not pts:
        return  # nothing left to measure
    if not record or not record.get("command"):
        say(f"fit check: no serve recipe recorded the server on port {port}, so no fit check was possible")
        return
    fleet, doors = servers(record["command"], record.get("engine"), max_len)
    if not fleet:
        say("fit check: the recorded serve command starts no vLLM, SGLang or TensorRT-LLM server; not checked")
        return
    verdicts = [fit.judge(fleet, load(p)) for p in pts]
    counts = {v: sum(x.verdict == v for x in verdicts) for v in (FITS, QUEUES, REJECTED)}
    say(f"fit check against the recorded serve command: {', '.join(f'{n} {v}' for v, n in counts.items() if n)}")
    for warning in fit.warnings(fleet, [v.load for v in verdicts]):
        say(f"  warning: {warning}")
    if args.dry_run:
        say(fit.limits_table(fleet) + "\n\n" + fit.verdicts_table(verdicts))
    else:
        for v in verdicts:
            for note in v.notes:
                say(f"  note: {v.load.scenario} {v.load.point}: {note}")
    refused = [v for v in verdicts if v.verdict == REJECTED or (v.verdict == QUEUES and not args.allow_queueing)]
    if refused:
        said = []
        for kind in (QUEUES, REJECTED):  # the points of each kind, and why for the first (--dry-run shows each)
            if these := [v for v in refused if v.verdict == kind]:
                said.append(f"{', '.join(f'{v.load.scenario} {v.load.point}' for v in these)} {kind} ({these[0].why})")
        queues = any(v.verdict == QUEUES for v in refused)
        allow = " (or pass --allow-queueing to measure the queueing on purpose)" if queues else ""
        raise UserError(
            f"the recorded serve command cannot hold {len(refused)} planned point(s), so nothing was measured: "
            f"{'; '.join(said)}; change the flag named in the serve recipe and restart the server, or leave the "
            f"scenario out with --skip{allow}"
        )


# just fit


def run(set_name: str, recipe: str, command: str) -> int:
    if not command.strip():
        raise UserError("no serve command after --: give the one a recipe prints, `just PRINT=1 RECIPE`")
    path = find_set(set_name)
    scenarios = load_set(path)
    fleet, doors = servers(command)
    if not fleet:
        raise UserError(
            f"{recipe or 'the command'} starts no vLLM, SGLang or TensorRT-LLM server: give a serve recipe "
            "(`just --list` shows them in the vllm, sglang and trt-llm groups)"
        )
    labels = [recipe, *(s.engine for s in fleet)]
    loads = []
    for s in scenarios:
        skip = skipped(s, labels)
        loads += [load(p)._replace(skip=f"the set skips it for {skip}" if skip else "") for p in points(s, Path("."))]
    print(f"{recipe or 'serve command'} against {path.name}")
    return fit.report(fleet, doors, [fit.judge(fleet, x) for x in loads])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenarios", metavar="SET", help="Scenario set: a name in recipes/scenarios/ or a .toml file.")
    p.add_argument("--recipe", default="", help="The serve recipe the command came from (matched to the skip lists).")
    p.add_argument("command", nargs="*", help="The serve command after --: one word (lines), or its words.")
    argv = sys.argv[1:] if argv is None else argv
    cut = argv.index("--") if "--" in argv else len(argv)  # the flags may stand before or after SET
    args = p.parse_args(argv[:cut])
    words = args.command + argv[cut + 1 :]
    text = words[0] if len(words) == 1 else shlex.join(words)
    return exit_status(PROG, lambda: run(args.scenarios, args.recipe, text))


if __name__ == "__main__":
    sys.exit(main())
