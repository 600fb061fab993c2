"""`bench run`'s command line: every flag with its group, type and help, and the value parsers that
refuse a bad value with one sentence. bench.instrument.spec turns the parsed flags into a RunSpec.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from bench.instrument.sessions import DATASETS as SESSION_DATASETS
from bench.instrument.traces import FORMATS as TRACE_DATASETS


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
