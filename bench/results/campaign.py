"""`bench campaign`: every scenario x load point of a scenario set, one `bench run` each.

Scenario sets are read by bench.results.scenarios. Each point is the `bench run` command line it
stands for, parsed into a RunSpec and measured in this process with `measure(spec)`, into
<results>/<campaign>/<label>/<scenario>/<load-point>/.
Resume: a point whose summary.json is complete is kept unless --redo; a partial or failed one is
renamed <load-point>.aside-N (never deleted) and measured again.

Its command line, with the key=value words of the `just bench` spelling and the default campaign
name they imply, is in bench.results.campaign_cli. With --report the campaign ends, as `just
report` and `just plot` would, with report.md, report.csv and the plots in its folder; a campaign
with failed points (exit 1) gets them too.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

from bench.errors import UserError
from bench.instrument import sessions, spec, traces
from bench.instrument.measure import measure
from bench.instrument.spec import RunSpec
from bench.results import campaign_cli, fitset, plot, report, slo
from bench.results.campaign_cli import add_arguments as add_arguments  # bench.cli builds the command from here
from bench.results.runfolder import state, summary
from bench.results.scenarios import (
    NAME,
    Point,
    Scenario,
    find_set,
    load_set,
    points,
    skip_reason,
)
from bench.results.sweep import SweepPoints

# `bench run` flags the campaign sets itself for every point.
OWNED = {
    "--out",
    "--campaign",
    "--scenario",
    "--label",
    "--base-url",
    "--model",
    "--concurrency",
    "--rate",
    "--num-prompts",
    "--input-len",
    "--output-len",
    "--dataset",
    "--dataset-path",
    "--range-ratio",
}
say = partial(print, flush=True)  # flushed: the hook writes to the same terminal


# Run folders


def set_aside(out: Path) -> Path:
    n = 1
    while (dest := out.with_name(f"{out.name}.aside-{n}")).exists():
        n += 1
    out.rename(dest)
    return dest


def describe(out: Path) -> str:
    s = summary(out)

    def ms(metric: str) -> str:
        v = s.get(f"p50_{metric}_ms", s.get(f"median_{metric}_ms"))
        return "-" if v is None else f"{v:.1f} ms"

    return (
        f"{s.get('output_throughput') or 0:,.0f} out tok/s, TTFT p50 {ms('ttft')}, TPOT p50 {ms('tpot')}, "
        f"{s.get('completed', 0)} ok/{s.get('failed', 0)} failed"
    )


# Measuring


def point_spec(args, p: Point, label: str, campaign: str, extra: list[str]) -> RunSpec:
    """The point as the `bench run` command line it stands for (--run-args and all), parsed once."""
    s = p.scenario
    argv = ["--base-url", args.base_url, "--label", label, "--campaign", campaign, "--scenario", s.name]
    argv += ["--out", str(p.out), "--num-prompts", str(p.num_prompts)]
    argv += ["--model", args.model] if args.model else []
    argv += ["--concurrency", str(p.concurrency)] if p.concurrency else []
    argv += ["--rate", f"{p.rate:g}"] if p.rate else []
    if s.dataset and s.dataset != "sessions":  # synthetic sessions read no file
        argv += ["--dataset", s.dataset, "--dataset-path", s.dataset_path]
    else:
        argv += ["--input-len", str(s.input_len)]
    argv += session_trace_flags(s)
    argv += ["--output-len", str(s.output_len)] if s.output_len else []
    argv += ["--range-ratio", f"{s.range_ratio:g}"] if s.range_ratio else []
    return spec.parse(argv + extra + p.run_args)


def session_trace_flags(s: Scenario) -> list[str]:
    """The `bench run` flags of a session or trace scenario (sessions send chat history)."""
    argv = ["--dataset", "sessions"] if s.dataset == "sessions" else []
    if s.dataset in sessions.DATASETS:
        argv += ["--api", "chat"]
        argv += ["--turns", s.turns] if s.turns else []
        argv += ["--think-time", s.think_time] if s.think_time else []
    if s.dataset in traces.FORMATS:
        argv += ["--time-scale", f"{s.time_scale:g}"]
    return argv


def measure_point(run: RunSpec) -> int:
    """Measure one point in this process, as `bench run` would: 0, 2 when the point was refused
    (bad input, said on stderr), 128 + the signal when interrupted (130: Ctrl-C). In-process, not
    a subprocess: nothing needs isolating, and Ctrl-C reaches the run directly (it stops, keeps a
    partial summary)."""
    check = None
    if run.self_check:
        from bench.lab import selfcheck

        check = selfcheck.for_run
    try:
        return 128 + result.signal if (result := measure(run, check)).signal else 0
    except UserError as e:
        print(f"bench run: {e}", file=sys.stderr, flush=True)
        return 2


def run_hook(args, scenario: str, campaign: str, label: str) -> None:
    say(f"hook before {scenario}: {args.hook}")
    env = {
        **os.environ,
        "BENCH_SCENARIO": scenario,
        "BENCH_CAMPAIGN": campaign,
        "BENCH_LABEL": label,
        "BENCH_BASE_URL": args.base_url,
    }
    if rc := subprocess.run(args.hook, shell=True, env=env).returncode:
        raise UserError(
            f"--hook {args.hook!r} failed with status {rc} before scenario {scenario}; "
            "fix it and run the same command again (finished points are kept)"
        )


def served_record(args) -> tuple[int | None, dict]:
    """(port, the record a serve recipe left for it, {} when none)."""
    from urllib.parse import urlsplit

    from bench.instrument import served as serverinfo

    port = urlsplit(args.base_url).port
    return port, (serverinfo.read(port) if port else None) or {}


def engine_names(args) -> list[str]:
    """[label, engine]: --label or the serve recipe's record of this port, which also names the engine."""
    port, served = served_record(args)
    label = args.label or served.get("label") or served.get("engine")
    if not label:
        raise UserError(
            f"no serve recipe recorded a label for port {port}: pass --label NAME (e.g. --label "
            "vllm-tp8), which names the engine's results folder"
        )
    if not NAME.fullmatch(label):
        raise UserError(f"engine label {label!r} names a folder: use letters, digits, '.', '_' or '-'")
    return [label] + ([served["engine"]] if served.get("engine") else [])


def plan(
    args,
    scenarios: list[Scenario],
    folder: Path,
    engines: list[str],
    max_len: int | None,
) -> list[list[Point]]:
    """Print one line per scenario and return the sweeps to run (skipped scenarios left out)."""
    sweeps = []
    for s in scenarios:
        if reason := skip_reason(s, args.skip, engines, max_len):
            say(f"  {s.name:<14} skipped: {reason}")
            continue
        if s.dataset and s.dataset != "sessions":
            given = s.dataset_path and os.path.expandvars(os.path.expanduser(s.dataset_path))
            s.dataset_path = args.dataset_path or given
            if not s.dataset_path or not Path(s.dataset_path).is_file():
                raise UserError(
                    f"scenario {s.name} reads a {s.dataset} file: pass --dataset-path FILE (e.g. "
                    f"ShareGPT_V3_unfiltered_cleaned_split.json) or leave it out with --skip {s.name}"
                )
        pts = points(s, folder)
        todo = sum(args.redo or state(p.out) != "done" for p in pts)
        shape = s.dataset if s.dataset else f"{s.input_len} in / {s.output_len} out"
        say(
            f"  {s.name:<14} {shape}, points {' '.join(p.name for p in pts)}, "
            f"{pts[0].num_prompts}..{pts[-1].num_prompts} prompts each, {todo} to measure"
        )
        sweeps.append(pts)
    return sweeps


def campaign_name(args, path: Path, words: dict[str, str], from_server: bool = False) -> str:
    campaign = args.name or campaign_cli.default_name(path, args.model, words, from_server)
    if not NAME.fullmatch(campaign):
        raise UserError(f"campaign name {campaign!r} must be letters, digits, '.', '_' or '-'")
    return campaign


def main(args) -> int:
    words = campaign_cli.apply(args)
    path = find_set(args.scenarios)
    scenarios = load_set(path)
    campaign = campaign_name(args, path, words)
    if args.pause < 0:
        raise UserError("--pause cannot be negative")
    if not 0 < args.ci_target < 1 or args.slo_resolution < 0:
        raise UserError("--ci-target must be between 0 and 1 (0.02 = +-2 %) and --slo-resolution at least 0")
    extra = shlex.split(args.run_args)
    slos = slo.parse(args.slo) if args.slo else None
    if clash := [a for a in extra if a.split("=")[0] in OWNED]:
        raise UserError(f"--run-args cannot set {', '.join(clash)}: the campaign sets it for every point")
    max_len = None
    if not args.dry_run:  # one clear error now, not one per point, when no server answers (or what it serves)
        from bench.instrument import probe

        info = probe.discover(args.base_url, args.model, os.environ.get("OPENAI_API_KEY"))
        max_len = info.max_model_len
        if not info.model_given:
            say(f"model: {info.model}, the only one the server serves")
            args.model = info.model
            campaign = campaign_name(args, path, words, from_server=True)
    engines = engine_names(args)
    label = engines[0]

    # Plan: what is skipped, what is left to measure.
    folder = args.results / campaign / label
    say(f"campaign {campaign}: {path.name} against {label} at {args.base_url}, results in {folder}")
    sweeps = [(campaign, pts) for pts in plan(args, scenarios, folder, engines, max_len)]
    # Fit: refuse, before anything is measured, points the recorded serve command would queue or reject.
    todo = [p for _, pts in sweeps for p in pts if args.redo or state(p.out) != "done"]
    fitset.check_campaign(*served_record(args), todo, args, max_len, say)
    if args.dry_run:
        return 0
    if args.points == "adaptive" or slos:  # points chosen as the campaign goes (bench.results.sweep)
        sweeps = [
            (name, SweepPoints(pts, args.points, args.ci_target, slos, args.slo_resolution)) for name, pts in sweeps
        ]
        say(f"  points: {args.points}{f', then SLO search {args.slo}' if slos else ''}; why each: <scenario>/points.md")
    pending = [sw for sw in sweeps if any(args.redo or state(p.out) != "done" for p in sw[1])]
    if args.warmup_sweep and pending:
        # The first sweep to measure, run once before it into <campaign>-warmup/ and left out.
        warm_name = f"{campaign}-warmup"
        sweeps.insert(
            sweeps.index(pending[0]), (warm_name, points(pending[0][1][0].scenario, args.results / warm_name / label))
        )

    # Measure: one bench run per point; the hook between scenarios that measure something.
    total, n, measured, failed, last = sum(len(pts) for _, pts in sweeps), 0, 0, [], None
    for name, pts in sweeps:
        redo = args.redo or name != campaign
        if not any(redo or state(p.out) != "done" for p in pts):
            n += len(pts)
            say(f"  {pts[0].scenario.name}: all {len(pts)} points finished earlier, kept (--redo measures again)")
            continue
        if args.hook and last == campaign:  # not before the first sweep, nor between a warm-up and its sweep
            run_hook(args, pts[0].scenario.name, campaign, label)
        last = name
        for p in pts:
            n += 1
            tag = f"[{n}/{total}]{' warm-up' if name != campaign else ''} {p.scenario.name} {p.name}"
            if (st := state(p.out)) == "done" and not redo:
                say(f"{tag}: finished earlier, kept")
                continue
            if st != "new":
                say(f"{tag}: {st} run moved to {set_aside(p.out).name}")
            if measured:
                time.sleep(args.pause)  # a deliberate cool-down between points, not synchronisation
            started = time.monotonic()
            # A seed per point (--run-args may still set one): no point's prompts, nor the warm-up's, can
            # sit in a prefix cache for the next, should the server keep one.
            seed = ["--seed", str(pts.index(p) + (1000 if name != campaign else 0))]
            rc = measure_point(point_spec(args, p, label, name, seed + extra))
            measured += 1
            if rc == 2 or rc > 128:  # bench run refused the point (bad input) or was interrupted: stop here
                say(
                    f"{tag}: {'interrupted' if rc > 128 else 'refused, see above'}; run the same command again "
                    "to resume"
                )
                return rc
            if state(p.out) != "done":
                failed.append(f"{p.scenario.name}/{p.name}")
                say(f"{tag}: FAILED ({describe(p.out)})")
                continue
            say(f"{tag}: {describe(p.out)} ({time.monotonic() - started:.0f} s)")

    say(f"campaign {campaign}: {measured} measured, {len(failed)} failed; results in {folder}")
    if failed:
        say(f"failed: {' '.join(failed)}; run the same command again to measure them again")
    if args.report:  # failed points do not hold back the others' tables and plots
        camp = args.results / campaign
        report.write(camp, markdown=camp / "report.md", csv_file=camp / "report.csv")
        plot.draw(camp)
    return 1 if failed else 0
