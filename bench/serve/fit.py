"""The fit check: can a serve command hold a load point as planned, or does it queue it or refuse it?

Static: nothing is started. The serve command's limits (bench.serve.limits, from the per-engine tables in
bench.serve.engines) meet each load as plain data (its most requests in flight, its longest input and its
longest input + output), and each load gets one verdict:
- "rejected": the longest input, or input + output, is over the server's max sequence length (the server
  fails the request, or cuts its output short: either way the point would not measure what it says), or,
  with chunked prefill off where the engine then refuses it, the input is over the tokens one step takes;
- "queues at the server": more requests in flight than the server runs at once, so the rest wait inside it
  and the latencies measure the queue;
- "fits" otherwise. A note says when the batch per rank is over the CUDA-graph maximum (it runs outside
  CUDA graphs: slower, not wrong), and when a limit cannot be known from the command (memory-derived, or
  from a model config not readable here): a warning, never a refusal.
A layout of several servers (prefill/decode disaggregation): the decode servers (all servers when none is
marked decode) run the requests in flight, so their running limits add up; every server's length limits
apply, and the tokens per step of those that prefill.

The scenario sets are read on the results side (bench.results.fitset: `just fit`, and the refusal in
`bench campaign`), which hands their points here as Loads. On its own:
    python -m bench.serve.fit --concurrency 64 --input-len 1024 --output-len 1024 -- CMD...
judges one load against a serve command given after -- (or several lines in one word, as a layout's
record holds them); it prints the table and exits 0 when the load fits, 1 when it would queue or be
rejected, 2 on bad input.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
from typing import NamedTuple

from tabulate import tabulate

from bench.errors import UserError, exit_status
from bench.serve.limits import Limit, Server, servers

PROG = "python -m bench.serve.fit"
FITS, QUEUES, REJECTED = "fits", "queues at the server", "rejected"


class Load(NamedTuple):
    scenario: str
    point: str  # the load-point name, e.g. c64 or r10
    in_flight: int | None  # most requests in flight: the concurrency, or an open-loop point's cap
    capped: bool  # in_flight is a cap; False: an open loop with no cap, in_flight is its prompt count
    max_input: int | None  # longest input in tokens (None: unknown, e.g. a JSONL dataset)
    max_total: int | None  # longest input + output
    skip: str = ""  # why the set leaves this point out for this engine: judged and shown, not counted


class Verdict(NamedTuple):
    load: Load
    verdict: str  # FITS, QUEUES or REJECTED
    why: str  # one phrase naming the limit and the flag that sets it
    notes: list[str]  # warnings: CUDA graphs, limits unknown


def shown(limit: Limit) -> str:
    return f"{limit.value:,} ({limit.how})" if limit.value is not None else limit.how


def judge(fleet: list[Server], load: Load) -> Verdict:
    """One load against every server of a layout (see the module's docstring for the rules)."""
    notes = []
    for s in fleet:
        if why := too_long(s, load):
            return Verdict(load, REJECTED, why, notes)
    decode = [s for s in fleet if s.role == "decode"] or fleet
    running = [s.running for s in decode]
    known = all(r.value is not None for r in running)
    total = sum(r.value for r in running) if known else None
    flag = decode[0].caps.running.flags[0]
    c = load.in_flight
    if c and total is not None and c > total:
        how = " + ".join(shown(r) for r in running)
        if load.capped:
            return Verdict(load, QUEUES, f"{c} in flight, the server runs {how} at once: raise {flag}", notes)
        notes.append(f"open loop without a cap: up to {c} in flight, over {how}; set max_concurrency to bound it")
    if c and (graphs := [s.graph.value for s in decode if s.graph.value is not None]):
        ranks = sum(s.ranks for s in decode)
        batch = math.ceil(min(c, total or c) / ranks)
        if batch > min(graphs):
            s = next(s for s in decode if s.graph.value == min(graphs))
            notes.append(
                f"batch {batch} per rank is over the CUDA-graph maximum {shown(s.graph)}: it runs outside "
                "CUDA graphs (slower, not wrong)"
            )
    return Verdict(load, FITS, "", notes)


def too_long(s: Server, load: Load) -> str | None:
    """Why the server refuses or cuts this load's longest request, naming the flag; None when it holds it."""
    flag = s.caps.seq_len.flags[0] if s.caps.seq_len.flags else s.caps.seq_len.keys[0]
    limit, (i, t) = s.seq_len.value, (load.max_input, load.max_total)
    if limit is not None and i is not None and i >= limit:
        return f"input {i:,} tokens, {s.name} allows {shown(s.seq_len)} in all: the request fails; raise {flag}"
    if limit is not None and t is not None and t > limit:
        return f"input + output {t:,} tokens, over {shown(s.seq_len)} of {s.name}: it {s.caps.too_long}; raise {flag}"
    step = s.step_tokens
    if s.role != "decode" and not s.chunked and s.caps.prompt_fits_step and step.value and i and i > step.value:
        on = s.caps.chunked_on[0] if s.caps.chunked_on else "chunked prefill"
        knob = s.caps.step_tokens.flags[0]
        return f"input {i:,} tokens, over {shown(step)} per step with chunked prefill off: raise {knob} or add {on}"
    return None


def warnings(fleet: list[Server], loads: list[Load]) -> list[str]:
    """What could not be checked, once for all loads: limits the command leaves to memory or the model."""
    out = [f"{s.name}: {note}" for s in fleet for note in s.notes]
    decode = [s for s in fleet if s.role == "decode"] or fleet
    most = max((x.in_flight or 0 for x in loads), default=0)
    longest = max((x.max_total or 0 for x in loads), default=0)
    for s in decode:
        if s.running.value is None and most:
            out.append(f"{s.name}: requests run at once {s.running.how}: {most} in flight not checked for queueing")
    for s in fleet:
        if s.seq_len.value is None and longest:
            out.append(f"{s.name}: max sequence {s.seq_len.how}: requests of up to {longest:,} tokens not checked")
    return out


def limits_table(fleet: list[Server]) -> str:
    rows = [
        [
            s.name if s.role == "both" else f"{s.name} ({s.role})",
            shown(s.running),
            shown(s.seq_len),
            f"{shown(s.step_tokens)}, chunked prefill {'on' if s.chunked else 'off'}",
            shown(s.graph) + (f" per rank, {s.ranks} ranks" if s.ranks > 1 else ""),
        ]
        for s in fleet
    ]
    heads = ["server", "runs at once", "max sequence", "tokens per step", "CUDA graphs up to"]
    return tabulate(rows, heads, tablefmt="github", disable_numparse=True)


def verdicts_table(verdicts: list[Verdict]) -> str:
    rows = []
    for v in verdicts:
        load = v.load
        flight = "-" if load.in_flight is None else f"{load.in_flight}" + ("" if load.capped else " (no cap)")
        lengths = "/".join("?" if x is None else f"{x:,}" for x in (load.max_input, load.max_total))
        why = "; ".join(x for x in (load.skip, v.why, *v.notes) if x)
        rows.append([load.scenario, load.point, flight, lengths, v.verdict + (" (skipped)" if load.skip else ""), why])
    heads = ["scenario", "point", "in flight", "longest input/total", "verdict", "why"]
    return tabulate(rows, heads, tablefmt="github", disable_numparse=True)


def check(command: str, loads: list[Load], engine: str | None = None, model_len: int | None = None):
    """(servers, front doors, verdicts) of a serve command (one line, or one per process) against the loads."""
    fleet, doors = servers(command, engine, model_len)
    if not fleet:
        raise UserError(
            "no vLLM, SGLang or TensorRT-LLM server in the serve command: give the command a serve recipe "
            "prints (`just PRINT=1 RECIPE`)"
        )
    return fleet, doors, [judge(fleet, load) for load in loads]


def report(fleet: list[Server], doors: list[str], verdicts: list[Verdict], out=None) -> int:
    """Print the limits and the verdicts; 0 when every load fits, 1 when any would queue or be rejected."""
    out = out or sys.stdout
    print(limits_table(fleet), file=out)
    for warning in warnings(fleet, [v.load for v in verdicts]):
        print(f"warning: {warning}", file=out)
    if doors:
        print(f"front door{'s' if len(doors) > 1 else ''} (no limits read): {', '.join(doors)}", file=out)
    print(file=out)
    print(verdicts_table(verdicts), file=out)
    return 0 if all(v.verdict == FITS or v.load.skip for v in verdicts) else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--concurrency", type=int, required=True, help="Most requests in flight at once.")
    p.add_argument("--input-len", type=int, help="Longest input in tokens (leave out when unknown).")
    p.add_argument("--output-len", type=int, default=0, help="Longest output in tokens.")
    p.add_argument(
        "--engine", help="The serve record's engine name, to pick its table (vllm-cpu for the embedded engine)."
    )
    p.add_argument("command", nargs=argparse.REMAINDER, help="The serve command, after --.")
    args = p.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    total = args.input_len + args.output_len if args.input_len else None
    load = Load("-", f"c{args.concurrency}", args.concurrency, True, args.input_len, total)

    def body() -> int:
        text = command[0] if len(command) == 1 else shlex.join(command)
        return report(*check(text, [load], args.engine))

    return exit_status(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
