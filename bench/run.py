"""`bench run`: measure one load point and write a run folder.

Phases: check the server and the input (control plane), build the workload, write the
manifest, warm up, measure, summarise from requests.jsonl, print the table.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import signal
import sys
import time
from datetime import datetime
from pathlib import Path
from time import perf_counter
from urllib.parse import urlsplit

from bench.errors import UserError
from bench.instrument import manifest, probe, schedule, workload
from bench.instrument.records import RecordWriter, read_records
from bench.instrument.runner import Load, Runner
from bench.paths import RESULTS as DEFAULT_RESULTS


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
    s.add_argument("--model", help="Served model name; default: the first one the server lists.")
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
    s.add_argument("--request-timeout", type=posf, default=3600.0, help="Seconds before one request counts as failed.")
    s.add_argument(
        "--extra-body",
        type=json.loads,
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
    ld.add_argument("--seed", type=int, default=0, help="Seed for prompts and arrival times (same seed, same run).")
    w = p.add_argument_group("workload")
    w.add_argument(
        "--dataset",
        choices=["random", "sharegpt", "jsonl"],
        default="random",
        help="random: exact token lengths; sharegpt: a ShareGPT JSON file; jsonl: one prompt per line.",
    )
    w.add_argument("--dataset-path", help="File for --dataset sharegpt or jsonl.")
    w.add_argument("--input-len", type=pos, default=1024, help="Prompt tokens per request (random).")
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
        help="Force the full output length (default on for random, off for datasets).",
    )
    o = p.add_argument_group("output")
    o.add_argument(
        "--out", type=Path, help="Run folder to create (must not exist); default results/runs/<time>-<label>-<load>."
    )
    o.add_argument("--campaign", help="Campaign name recorded in the manifest (set by `bench campaign`).")
    o.add_argument("--scenario", help="Scenario name recorded in the manifest (set by `bench campaign`).")
    o.add_argument("--no-progress", action="store_true", help="Do not draw the progress bar.")
    o.add_argument(
        "--self-check",
        action="store_true",
        help="First measure this client against the built-in calibration server at the same "
        "concurrency and keep its error bar in the manifest.",
    )


def _tokenizer_path(args, info: probe.ServerInfo) -> str:
    for candidate in (args.tokenizer, args.model, info.root, info.model):
        if candidate and Path(candidate).exists():
            return candidate
    raise UserError("cannot find the model's tokenizer; pass --tokenizer with its folder or tokenizer.json")


def build_workload(args, info: probe.ServerInfo, api_key: str | None, extra: dict):
    """(warm-up prompts, measured prompts, the tokenizer) for the chosen dataset."""
    tok = workload.load_tokenizer(_tokenizer_path(args, info))
    n = args.num_prompts + args.warmup
    if args.dataset == "random":
        out_len = args.output_len or 128
        longest = (args.input_len + out_len) * (1 + args.range_ratio)
        if info.max_model_len and longest > info.max_model_len:
            raise UserError(
                f"input + output length ({longest:.0f} tokens) exceeds the model's limit of "
                f"{info.max_model_len}; lower --input-len/--output-len"
            )
        gen = workload.RandomPrompts(tok, seed=10**6 + args.seed)
        overhead = probe.prompt_overhead(info, args.api, gen.text(0, probe.PROBE_WORDS), api_key, extra)
        prompts = workload.random_workload(
            tok, n, args.input_len, out_len, args.range_ratio, args.seed, overhead, args.prefix_len
        )
    else:
        if not args.dataset_path:
            raise UserError(f"--dataset {args.dataset} needs --dataset-path FILE")
        if args.dataset == "sharegpt":
            prompts = workload.sharegpt_workload(args.dataset_path, tok, n, args.seed, args.output_len)
        else:
            prompts = workload.jsonl_workload(args.dataset_path, n, args.output_len)
        probe.prompt_overhead(info, args.api, "ping " * probe.PROBE_WORDS, api_key, extra)
    if len(prompts) < n:
        raise UserError(f"the dataset yields {len(prompts)} usable prompts, fewer than the {n} asked for")
    return prompts[: args.warmup], prompts[args.warmup :], tok


def request_body(model: str, api: str, ignore_eos: bool, extra: dict):
    stream_options = {"include_usage": True, "continuous_usage_stats": True}

    def make(prompt: workload.Prompt) -> dict:
        body = {"model": model, "stream": True, "stream_options": stream_options, "temperature": 0.0}
        if api == "chat":
            body["messages"] = [{"role": "user", "content": prompt.text}]
        else:
            body["prompt"] = prompt.text
        if prompt.output_len:
            body["max_tokens"] = prompt.output_len
        if ignore_eos:
            body["ignore_eos"] = True
        body.update(extra)
        return body

    return make


def run_folder(args, label: str) -> Path:
    load = schedule.load_point_name(args.concurrency, args.rate)
    out = args.out or DEFAULT_RESULTS / "runs" / f"{datetime.now():%Y%m%d-%H%M%S}-{label}-{load}"
    if out.exists() and any(out.iterdir()):
        raise UserError(f"run folder {out} already holds results; choose another --out (nothing is overwritten)")
    out.mkdir(parents=True, exist_ok=True)
    return out


def main(args) -> int:
    from bench.instrument import metrics
    from bench.instrument import served as serverinfo

    if args.concurrency is None and args.rate is None:
        raise UserError("give --concurrency N (closed loop) or --rate R (open loop)")
    if args.warmup < 0 or args.prefix_len < 0:
        raise UserError("--warmup and --prefix-len cannot be negative")
    api_key = os.environ.get("OPENAI_API_KEY")
    extra = dict(args.extra_body)
    info = probe.discover(args.base_url, args.model, api_key)
    ignore_eos = args.ignore_eos if args.ignore_eos is not None else args.dataset == "random"
    warm, prompts, tok = build_workload(args, info, api_key, extra)
    port = urlsplit(args.base_url).port
    served = serverinfo.read(port) if port else None
    served = served or {}
    label = args.label or served.get("label") or served.get("engine") or "server"
    out = run_folder(args, label)

    t0 = perf_counter()
    arrivals = schedule.arrival_times(len(prompts), args.rate, args.burstiness, args.seed) if args.rate else None
    load = Load(args.concurrency, args.rate, arrivals, args.duration, args.request_timeout)
    man = manifest.build(
        args.argv,
        t0,
        server={
            "base_url": args.base_url,
            "model": info.model,
            "version": info.version,
            "system_fingerprint": info.system_fingerprint,
            "engine": served.get("engine"),
            "label": label,
            "serve_command": served.get("command"),
        },
        api=args.api,
        transport=args.transport,
        workload={
            "name": args.dataset,
            "dataset": args.dataset_path,
            "input_len": args.input_len,
            "output_len": args.output_len or (128 if args.dataset == "random" else None),
            "range_ratio": args.range_ratio,
            "prefix_len": args.prefix_len,
            "num_prompts": args.num_prompts,
            "seed": args.seed,
            "ignore_eos": ignore_eos,
            "extra_body": extra,
        },
        load={
            "concurrency": args.concurrency,
            "rate": args.rate,
            "burstiness": args.burstiness,
            "warmup": args.warmup,
            "duration": args.duration,
        },
    )
    man["gpu_count"] = args.gpus or served.get("gpus") or man["gpu_count"]
    if args.campaign or args.scenario:
        man["campaign"] = {
            "name": args.campaign,
            "scenario": args.scenario,
            "load_point": schedule.load_point_name(args.concurrency, args.rate),
        }
    if args.self_check:
        from bench.lab import accuracy

        man["self_check"] = accuracy.self_check(args.concurrency or 64, args.api)
        print(accuracy.describe(man["self_check"]), file=sys.stderr)
    manifest.write(out / "manifest.json", man)

    # The collector is off while sending, and what is alive now (the SDK's classes, the
    # tokenizer, the prompts) is frozen out of its passes: a full pass stalled the loop for up
    # to 70 ms mid-run and cost ~2 % of the client's CPU, while sending makes no cyclic garbage
    # (gc.collect() found none after 2,048 good requests at C=1024, nor after 19,744 failed).
    gc.collect()
    gc.freeze()
    gc.disable()
    cpu = time.process_time()
    try:
        partial = _event_loop_run(_measure(args, info, api_key, ignore_eos, extra, tok, warm, prompts, load, out, t0))
    finally:
        cpu = time.process_time() - cpu
        gc.enable()
        gc.unfreeze()

    records = list(read_records(out / "requests.jsonl"))
    summary = metrics.summarise(records, gpu_count=man["gpu_count"])
    summary["partial"] = partial
    # The client's own cost while sending (warm-up included): a busy client inflates latency.
    chunks = sum(len(r.chunk_times) for r in records)
    summary["client_cpu_s"] = round(cpu, 3)
    summary["client_cpu_ms_per_1k_chunks"] = round(1e6 * cpu / chunks, 3) if chunks else None
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    man["partial"] = partial
    manifest.write(out / "manifest.json", man)
    print(metrics.format_summary(summary))
    if summary["client_cpu_ms_per_1k_chunks"] is not None:
        print(
            f"client CPU while sending: {summary['client_cpu_ms_per_1k_chunks']:.1f} ms per 1,000 chunks",
            file=sys.stderr,
        )
    print(f"run folder: {out}", file=sys.stderr)
    return 130 if partial else 0


def _event_loop_run(coro):
    """uvloop when installed: its per-callback cost is a fraction of asyncio's."""
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


async def _measure(args, info, api_key, ignore_eos, extra, tok, warm, prompts, load, out, t0) -> bool:
    """Warm up and measure; True when interrupted (the records written so far are kept)."""
    if args.transport == "openai":
        from bench.instrument.client_openai import OpenAITransport

        transport = OpenAITransport(args.base_url, args.api, api_key, args.request_timeout)
    else:
        from bench.instrument.client import RawTransport

        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        transport = RawTransport(args.base_url, args.api, headers)
    transport.count = lambda text: len(tok.encode(text, add_special_tokens=False).ids)
    writer = RecordWriter(out / "requests.jsonl")
    runner = Runner(
        transport,
        writer,
        request_body(info.model, args.api, ignore_eos, extra),
        t0,
        show_progress=not args.no_progress and sys.stderr.isatty(),
    )
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, runner.interrupt)
    try:
        await runner.run(warm, prompts, load)
    except asyncio.CancelledError:
        pass
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        await transport.close()
        runner.write_ended()
        writer.close()
    return runner.stopping
