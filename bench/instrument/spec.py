"""The run specification: one load point, as typed values, parsed once from the command line.

`add_arguments` declares `bench run`'s flags; `from_args` turns parsed flags into a `RunSpec`
(defaults resolved, combinations checked) and below that line nothing sees `args`.
`parse(argv)` does both for callers that hold a `bench run` command line (a campaign point).
"""

from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

from bench.errors import UserError
from bench.instrument.sessions import DATASETS as SESSION_DATASETS
from bench.instrument.sessions import Dist
from bench.instrument.traces import FORMATS as TRACE_DATASETS


@dataclass(frozen=True)
class RunSpec:
    # server
    base_url: str
    model: str | None  # served model name; None: the first the server lists
    api: str  # "completions" or "chat"
    transport: str  # "raw" or "openai"
    label: str | None  # engine label; None: the serve recipe's, else the engine name
    gpus: int | None
    request_timeout: float
    connect_timeout: float
    first_token_timeout: float
    extra_body: dict
    # load
    concurrency: int | None
    rate: float | None
    burstiness: float
    num_prompts: int
    duration: float | None
    warmup: int
    seed: int
    # workload
    dataset: str  # "random", "sharegpt", "jsonl", a session workload or a trace format
    dataset_path: str | None
    input_len: int
    output_len: int | None  # 128 for random prompts when not given; None: the dataset's own
    range_ratio: float
    prefix_len: int
    tokenizer: str | None
    ignore_eos: bool
    # output
    out: Path | None  # None: results/runs/<time>-<label>-<load>
    campaign: str | None
    scenario: str | None
    progress: bool
    min_success: float  # below this success rate the run is marked failed
    self_check: bool
    scrape_interval: float  # seconds between scrapes of the server's /metrics; 0: no telemetry
    gpu_ids: str = "all"  # GPUs to sample: "all" visible, "none", or indices "0,1"
    gpu_interval: float = 0.1  # seconds between GPU samples
    workers: int | None = None  # client processes; None: as many as the load needs (bench.instrument.workers)
    argv: list[str] = field(default_factory=list)  # the command line, for the manifest
    # sessions and trace replay (bench.instrument.sessions, bench.instrument.traces)
    turns: str = "3"  # turns per conversation, a distribution (N, A:B, exp:M)
    think_time: str = "0"  # seconds between an answer and the next turn, a distribution
    session_fault: str | None = None  # a deliberate fault in the history ("retokenize"); None: none
    time_scale: float = 1.0  # trace replay: the recorded gaps multiplied by this
    # steady-state stopping (bench.instrument.steady): send until steady or a cap
    until_steady: bool = False
    ci_target: float = 0.02  # relative 95 % half-width of output throughput and mean TPOT
    min_requests: int = 50  # completed requests the window must hold before it may be called steady
    max_requests: int = 2000  # cap on measured requests with --until-steady (replaces --num-prompts)
    ramp_up: float = 0.0  # closed loop: the streams' first requests spread evenly over this many seconds

    @property
    def api_key(self) -> str | None:
        """Read when needed, never stored: a spec may be printed or kept."""
        return os.environ.get("OPENAI_API_KEY")

    @property
    def gpu_id_list(self) -> list[int] | None:
        """The GPU indices to sample; None: every visible one (also for "none": then nothing starts)."""
        return None if self.gpu_ids in ("all", "none") else [int(i) for i in self.gpu_ids.split(",")]


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{text} must be greater than 0")
        return value

    return parse


def _ratio(text: str) -> float:
    value = _positive(float)(text) if text not in ("0", "0.0") else 0.0
    if value >= 1:
        raise argparse.ArgumentTypeError(f"{text} must be in [0, 1)")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    pos, posf = _positive(int), _positive(float)
    s = p.add_argument_group("server")
    s.add_argument(
        "--base-url",
        default=os.environ.get("OPENAI_BASE_URL", "http://127.0.0.1:8000/v1"),
        help="OpenAI-compatible base URL of the server (API key from OPENAI_API_KEY).",
    )
    s.add_argument("--model", help="Served model name; needed only when the server serves more than one.")
    s.add_argument(
        "--api",
        choices=["completions", "chat"],
        default="completions",
        help="Endpoint to load: /v1/completions or /v1/chat/completions.",
    )
    s.add_argument(
        "--transport",
        choices=["raw", "openai"],
        default="raw",
        help="raw: the low-overhead client (default); openai: the SDK, to cross-check what apps see.",
    )
    s.add_argument("--label", help="Engine label for reports; default: the serve recipe's, else the engine name.")
    s.add_argument("--gpus", type=pos, help="GPUs behind the server, for per-GPU throughput.")
    s.add_argument(
        "--request-timeout",
        type=posf,
        default=3600.0,
        help="Seconds for a whole response before the request counts as failed (timeout_total).",
    )
    s.add_argument(
        "--connect-timeout",
        type=posf,
        default=30.0,
        help="Seconds to open a connection before the request counts as failed (timeout_connect).",
    )
    s.add_argument(
        "--first-token-timeout",
        type=posf,
        default=900.0,
        help="Seconds from the send to the first generated text before the request counts as failed "
        "(timeout_first_token); raise it for long prompts on a loaded server.",
    )
    s.add_argument(
        "--extra-body",
        type=_json_object,
        default={},
        help="JSON merged into every request body, e.g. '{\"temperature\": 0.6}'.",
    )
    ld = p.add_argument_group("load")
    ld.add_argument("--concurrency", type=pos, help="Most requests in flight; alone it makes a closed loop.")
    ld.add_argument("--rate", type=posf, help="Open loop: mean requests/s (capped by --concurrency if given).")
    ld.add_argument(
        "--burstiness",
        type=posf,
        default=1.0,
        help="Gamma shape of the arrival gaps: 1 = Poisson, <1 burstier, >1 more regular.",
    )
    ld.add_argument("--num-prompts", type=pos, default=100, help="Measured requests to send.")
    ld.add_argument("--duration", type=posf, help="Stop sending after this many seconds (whichever ends first).")
    ld.add_argument("--warmup", type=int, default=0, help="Requests sent first and left out of the statistics.")
    ld.add_argument(
        "--ramp-up",
        type=float,
        default=0.0,
        help="Closed loop: start the streams evenly over this many seconds instead of all at once (their first "
        "requests are scheduled so, and send lag is measured against that schedule).",
    )
    ld.add_argument(
        "--workers",
        type=pos,
        help="Client processes sharing the schedule, each on its own core; default: 1 until one core "
        "would be too busy for the concurrency, then enough (the summary says how many and why).",
    )
    ld.add_argument("--seed", type=int, default=0, help="Seed for prompts and arrival times (same seed, same run).")
    w = p.add_argument_group("workload")
    w.add_argument(
        "--dataset",
        choices=["random", "sharegpt", "jsonl", *SESSION_DATASETS, *TRACE_DATASETS],
        default="random",
        help="random: exact token lengths; sharegpt: a ShareGPT JSON file; jsonl: one prompt per line; "
        "sessions / sharegpt-sessions: multi-turn conversations (--num-prompts and --warmup count "
        "conversations; needs --api chat); mooncake / burstgpt: replay a trace file at its recorded times.",
    )
    w.add_argument(
        "--dataset-path", help="File for --dataset sharegpt, jsonl, sharegpt-sessions, mooncake or burstgpt."
    )
    w.add_argument(
        "--input-len", type=pos, default=1024, help="Prompt tokens per request (random); per user message (sessions)."
    )
    w.add_argument("--output-len", type=pos, help="Output tokens per request (default 128 for random).")
    w.add_argument("--range-ratio", type=_ratio, default=0.0, help="Vary lengths uniformly by +-this fraction.")
    w.add_argument(
        "--prefix-len", type=int, default=0, help="Tokens shared by every prompt, to make cache hits deliberate."
    )
    w.add_argument("--tokenizer", help="Folder or tokenizer.json of the model; default: the model path.")
    w.add_argument(
        "--ignore-eos",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Force the full output length (default on for random, sessions and traces, off for datasets).",
    )
    ss = p.add_argument_group("sessions and traces")
    ss.add_argument(
        "--turns", default="3", help="Turns per synthetic conversation: N, A:B (uniform) or exp:MEAN (rounded)."
    )
    ss.add_argument(
        "--think-time",
        default="0",
        help="Seconds a session's user waits after an answer before the next turn: N, A:B or exp:MEAN.",
    )
    ss.add_argument(
        "--session-fault",
        choices=["retokenize"],
        help="Break the history on purpose (re-tokenise it every turn) to see the prefix cache lose it.",
    )
    ss.add_argument(
        "--time-scale",
        type=posf,
        default=1.0,
        help="Trace replay: multiply the recorded gaps by this (0.5 = twice as fast).",
    )
    o = p.add_argument_group("output")
    o.add_argument(
        "--out", type=Path, help="Run folder to create (must not exist); default results/runs/<time>-<label>-<load>."
    )
    o.add_argument("--campaign", help="Campaign name recorded in the manifest (set by `bench campaign`).")
    o.add_argument("--scenario", help="Scenario name recorded in the manifest (set by `bench campaign`).")
    o.add_argument("--no-progress", action="store_true", help="Do not draw the progress bar.")
    o.add_argument(
        "--min-success",
        type=_share,
        default=0.99,
        help="Share of the measured requests (those the run did not cut short) that must succeed, else the run "
        "is marked failed and exits 1; lower it to measure a server that fails on purpose.",
    )
    o.add_argument(
        "--self-check",
        action="store_true",
        help="First measure this client against the built-in calibration server at the same "
        "concurrency and keep its error bar in the manifest.",
    )
    o.add_argument(
        "--scrape-interval",
        type=_seconds,
        default=1.0,
        help="Seconds between scrapes of the server's /metrics into server.jsonl (0 turns it off).",
    )
    o.add_argument(
        "--gpu-ids",
        type=_gpu_ids,
        default="all",
        help="GPUs whose power, energy, clocks and throttling to sample into gpu.jsonl: all (every one NVML "
        "sees), none, or indices such as 0,1,2,3; give the server's GPUs when it uses only some.",
    )
    o.add_argument(
        "--gpu-interval",
        type=_positive(float),
        default=0.1,
        help="Seconds between GPU samples; 0.1 keeps integrated power within a few %% of the energy counter.",
    )
    add_steady_arguments(p)


def _gpu_ids(text: str) -> str:
    text = text.strip().lower()
    if text in ("all", "none"):
        return text
    parts = [p.strip() for p in text.split(",")]
    if not all(p.isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"{text!r} is not all, none or GPU indices such as 0,1")
    return ",".join(str(int(p)) for p in parts)


def add_steady_arguments(p: argparse.ArgumentParser) -> None:
    pos = _positive(int)
    st = p.add_argument_group("steady-state stopping")
    st.add_argument(
        "--until-steady",
        action="store_true",
        help="Keep sending until output throughput and mean TPOT are known to --ci-target (batch means), "
        "or a cap is hit; spends no more requests than the point needs.",
    )
    st.add_argument(
        "--ci-target",
        type=_target,
        help="With --until-steady: the 95 %% half-width to reach, relative to the mean (default 0.02 = +-2 %%).",
    )
    st.add_argument(
        "--min-requests",
        type=pos,
        help="With --until-steady: completed requests needed before the point may be called steady (default 50).",
    )
    st.add_argument(
        "--max-requests",
        type=pos,
        help="With --until-steady: stop after this many measured requests even if not steady "
        "(default 2000; it replaces --num-prompts).",
    )
    st.add_argument(
        "--max-duration",
        type=_positive(float),
        help="With --until-steady: stop sending after this many seconds even if not steady (as --duration).",
    )


def _target(text: str) -> float:
    value = _float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be above 0 and below 1 (0.02 = +-2 %)")
    return value


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"{text!r} is not a JSON object such as '{{\"temperature\": 0.6}}'")
    return value


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def _seconds(text: str) -> float:
    value = _float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} cannot be negative")
    return value


def _share(text: str) -> float:
    value = _float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text} must be between 0 and 1 (0.99 = 99 %)")
    return value


def from_args(args: argparse.Namespace, argv: list[str]) -> RunSpec:
    """The spec of parsed `bench run` flags; `argv` is the command line as the user gave it."""
    url = urlsplit(args.base_url)
    if url.scheme not in ("http", "https") or not url.netloc:
        raise UserError(
            f"--base-url {args.base_url!r} is not an http:// or https:// address; give one such as "
            "http://127.0.0.1:8000/v1"
        )
    trace = args.dataset in TRACE_DATASETS
    if args.concurrency is None and args.rate is None and not trace:
        raise UserError("give --concurrency N (closed loop) or --rate R (open loop)")
    if trace and args.rate is not None:
        raise UserError(f"--dataset {args.dataset} sends at the trace's times; drop --rate (--time-scale speeds it up)")
    if args.dataset in SESSION_DATASETS and (args.api != "chat" or args.transport != "raw"):
        raise UserError(f"--dataset {args.dataset} sends chat history: give --api chat (with the raw transport)")
    if args.dataset in SESSION_DATASETS:
        Dist.parse(args.turns, "--turns")
        Dist.parse(args.think_time, "--think-time")
    sessions_or_trace = trace or args.dataset in SESSION_DATASETS
    if sessions_or_trace and args.workers is not None and args.workers > 1:
        raise UserError(
            f"--dataset {args.dataset} runs in one client process (turns and shared blocks in order); drop --workers"
        )
    if args.until_steady and args.workers is not None and args.workers > 1:
        raise UserError("--until-steady judges every record as it ends in one client process; drop --workers")
    if args.warmup < 0 or args.prefix_len < 0:
        raise UserError("--warmup and --prefix-len cannot be negative")
    if not 0 <= args.ramp_up < math.inf or (args.ramp_up and (args.rate is not None or sessions_or_trace)):
        raise UserError(
            "--ramp-up takes a finite number of seconds >= 0 and applies to a closed loop (--concurrency "
            "without --rate, not sessions or traces): an open loop's arrivals are spread already"
        )
    random = args.dataset == "random"
    exact = args.dataset in ("random", "sessions", "mooncake", "burstgpt")  # lengths the workload fixes
    spec = RunSpec(
        base_url=args.base_url,
        model=args.model,
        api=args.api,
        transport=args.transport,
        label=args.label,
        gpus=args.gpus,
        request_timeout=args.request_timeout,
        connect_timeout=args.connect_timeout,
        first_token_timeout=args.first_token_timeout,
        extra_body=dict(args.extra_body),
        concurrency=args.concurrency,
        rate=args.rate,
        burstiness=args.burstiness,
        num_prompts=args.num_prompts,
        duration=args.duration,
        warmup=args.warmup,
        seed=args.seed,
        dataset=args.dataset,
        dataset_path=args.dataset_path,
        input_len=args.input_len,
        output_len=args.output_len or (128 if random or args.dataset == "sessions" else None),
        range_ratio=args.range_ratio,
        prefix_len=args.prefix_len,
        tokenizer=args.tokenizer,
        ignore_eos=args.ignore_eos if args.ignore_eos is not None else exact,
        out=args.out,
        campaign=args.campaign,
        scenario=args.scenario,
        progress=not args.no_progress,
        min_success=args.min_success,
        self_check=args.self_check,
        scrape_interval=args.scrape_interval,
        gpu_ids=args.gpu_ids,
        gpu_interval=args.gpu_interval,
        workers=args.workers,
        argv=list(argv),
        turns=args.turns,
        think_time=args.think_time,
        session_fault=args.session_fault,
        time_scale=args.time_scale,
        ramp_up=args.ramp_up,
    )
    return replace(spec, **_steady(args))


def _steady(args: argparse.Namespace) -> dict:
    """The steady-state fields; --max-requests stands in for --num-prompts, --max-duration for --duration."""
    given = [args.ci_target, args.min_requests, args.max_requests, args.max_duration]
    if not args.until_steady:
        if any(v is not None for v in given):
            raise UserError(
                "--ci-target, --min-requests, --max-requests and --max-duration apply only with --until-steady; "
                "add it, or leave them out"
            )
        return {}
    durations = [d for d in (args.duration, args.max_duration) if d]
    cap = args.max_requests or RunSpec.max_requests
    return {
        "until_steady": True,
        "ci_target": args.ci_target or RunSpec.ci_target,
        "min_requests": args.min_requests or RunSpec.min_requests,
        "max_requests": cap,
        "num_prompts": cap,
        "duration": min(durations) if durations else None,
    }


class _Refusal(argparse.ArgumentParser):
    def error(self, message: str):
        raise UserError(f"bench run flags: {message}")


def parse(argv: list[str]) -> RunSpec:
    """The spec of a `bench run` command line (without `bench run`); bad flags raise UserError."""
    p = _Refusal(prog="bench run", add_help=False)
    add_arguments(p)
    return from_args(p.parse_args(argv), ["bench", "run", *argv])
