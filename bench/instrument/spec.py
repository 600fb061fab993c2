"""The run specification: one load point, as typed values, parsed once from the command line.

bench.instrument.run_flags declares `bench run`'s flags; `from_args` turns parsed flags into a
`RunSpec` (defaults resolved, combinations checked) and below that line nothing sees `args`.
`parse(argv)` does both for callers that hold a `bench run` command line (a campaign point).
"""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

from bench.errors import UserError
from bench.instrument.run_flags import add_arguments
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
