"""How `measure` builds and drives the session and trace workloads (bench.instrument.sessions,
bench.instrument.traces): their prompts, their arrival times, their runner, their manifest part."""

from __future__ import annotations

from bench.errors import UserError
from bench.instrument import probe, schedule, sessions, traces, workload
from bench.instrument.runner import Runner
from bench.instrument.session_runner import SessionRunner
from bench.instrument.spec import RunSpec

KINDS = sessions.DATASETS + traces.FORMATS


def check(spec: RunSpec) -> None:
    """Refuse bad session flags before anything starts."""
    sessions.Dist.parse(spec.turns, "--turns")
    sessions.Dist.parse(spec.think_time, "--think-time")


def build(spec: RunSpec, info: probe.ServerInfo, tok) -> tuple[list, list]:
    """(warm-up, measured) conversations (sessions) or prompts (traces)."""
    check(spec)
    n = spec.num_prompts + spec.warmup
    extra = spec.extra_body
    if spec.dataset in traces.FORMATS or spec.dataset == "sharegpt-sessions":
        if not spec.dataset_path:
            raise UserError(f"--dataset {spec.dataset} needs --dataset-path FILE")
    think = sessions.Dist.parse(spec.think_time, "--think-time")
    if spec.dataset == "sessions":
        turns = sessions.Dist.parse(spec.turns, "--turns")
        probe.prompt_overhead(info, "chat", "ping " * probe.PROBE_WORDS, spec.api_key, extra)
        items = sessions.synthetic(tok, n, turns, think, spec.input_len, spec.output_len, spec.range_ratio, spec.seed)
    elif spec.dataset == "sharegpt-sessions":
        probe.prompt_overhead(info, "chat", "ping " * probe.PROBE_WORDS, spec.api_key, extra)
        budget = (info.max_model_len or 4096) - 256  # room for the chat template's own tokens
        items = sessions.sharegpt(spec.dataset_path, tok, n, spec.seed, spec.output_len, think, budget)
    else:
        trace = traces.read(spec.dataset, spec.dataset_path)[:n]
        gen = workload.RandomPrompts(tok, seed=10**6 + spec.seed)
        overhead = probe.prompt_overhead(info, spec.api, gen.text(0, probe.PROBE_WORDS), spec.api_key, extra)
        longest = max((r.input_len + r.output_len for r in trace), default=0)
        if info.max_model_len and longest > info.max_model_len:
            raise UserError(
                f"the trace has a request of {longest} tokens, more than the model's limit of {info.max_model_len}"
            )
        warm = traces.prompts(trace[: spec.warmup], tok, overhead, spec.seed, spec.time_scale)
        items = warm + traces.prompts(trace[spec.warmup :], tok, overhead, spec.seed, spec.time_scale)
    if len(items) < n:
        what = "conversations" if spec.dataset in sessions.DATASETS else "requests"
        raise UserError(
            f"the dataset yields {len(items)} usable {what}, fewer than the {n} asked for; lower --num-prompts"
        )
    return items[: spec.warmup], items[spec.warmup :]


def arrivals(spec: RunSpec, measured: list) -> list[float] | None:
    """When each measured request (trace) or conversation (sessions at --rate) is due."""
    if spec.dataset in traces.FORMATS:
        return [p.at for p in measured]
    return schedule.arrival_times(len(measured), spec.rate, spec.burstiness, spec.seed) if spec.rate else None


def connections(spec: RunSpec, arrivals: list[float] | None) -> int | None:
    """Connections to open before a trace replay (an open loop without a cap would open them as it
    sends, late): as many as requests arrive within any 2 s, at most 256. None: the runner's choice."""
    if spec.dataset not in traces.FORMATS or not arrivals:
        return None
    most, lo = 0, 0
    for hi, t in enumerate(arrivals):
        while t - arrivals[lo] > 2.0:
            lo += 1
        most = max(most, hi - lo + 1)
    return min(most, spec.concurrency or 256, 256)


def runner_class(spec: RunSpec, tok):
    """The runner for the workload, and its keyword arguments."""
    if spec.dataset not in sessions.DATASETS:
        return Runner, {}
    rewrite = (lambda text: sessions.retokenized(text, tok)) if spec.session_fault == "retokenize" else None
    return SessionRunner, {"rewrite": rewrite}


def load_point(spec: RunSpec) -> str:
    """The run's load-point name: a trace replay is `replay-x<time scale>` (capped: `-c<N>`)."""
    if spec.dataset not in traces.FORMATS:
        return schedule.load_point_name(spec.concurrency, spec.rate)
    return f"replay-x{spec.time_scale:g}" + (f"-c{spec.concurrency}" if spec.concurrency else "")


def describe(spec: RunSpec, warm: list, measured: list) -> dict:
    """What the manifest's workload records beyond the common keys."""
    if spec.dataset in sessions.DATASETS:
        return {
            "conversations": len(measured),
            "turns_total": sum(c.turns for c in measured),
            "turns": spec.turns if spec.dataset == "sessions" else "recorded",
            "think_time": spec.think_time,
            "session_fault": spec.session_fault,
        }
    trace = traces.read(spec.dataset, spec.dataset_path)[: len(warm) + len(measured)]
    return {
        "trace_requests": len(measured),
        "time_scale": spec.time_scale,
        "trace_span_s": measured[-1].at if measured else 0.0,
        "theoretical_prefix_hit_rate": traces.theoretical_hit_rate(trace, len(warm)),
    }
