"""`measure(spec)`: one load point, from a RunSpec to a run folder. The one way to measure.

`bench run`, the self-check and every campaign point call it. Phases: ask the server what it
serves (control plane), build the workload, create the run folder and write the manifest,
warm up and measure (records appended as requests end), summarise from requests.jsonl. It
prints nothing but the progress bar (when asked, on a terminal): callers say what they need.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import json
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from time import perf_counter
from urllib.parse import urlsplit

from bench.instrument import (
    checks,
    dialect,
    energy,
    manifest,
    metrics,
    probe,
    schedule,
    served,
    session_metrics,
    steady,
    verdict,
    workers,
    workload,
)
from bench.instrument import session_trace_workload as more
from bench.instrument.gpu_sampler import GpuSampler
from bench.instrument.reasoning import think_tags
from bench.instrument.records import RecordWriter, read_records
from bench.instrument.run_folder import gpu_devices, run_folder, run_manifest
from bench.instrument.run_requests import build_workload, request_body
from bench.instrument.runner import Load, Runner
from bench.instrument.scrape import Scraper
from bench.instrument.spec import RunSpec
from bench.instrument.transport import TokenCounter, Transport


@dataclass
class Measured:
    out: Path  # the run folder
    summary: dict  # as written to summary.json
    manifest: dict  # as written to manifest.json
    partial: bool  # interrupted: the records so far are kept and summarised
    signal: int  # the signal that interrupted it (SIGINT, SIGTERM), 0 when none did


def measure(spec: RunSpec, self_check: Callable[[RunSpec], dict] | None = None) -> Measured:
    """Measure one load point into a new run folder. `self_check`, when given, runs after the
    server and workload are known and before any load; its result goes into the manifest."""
    # Control plane and workload: every refusal comes before the run folder exists.
    info = probe.discover(spec.base_url, spec.model, spec.api_key)
    port = urlsplit(spec.base_url).port
    server = (served.read(port) if port else None) or {}
    speaks = dialect.of(server.get("engine"))
    warm, prompts, tok, tok_file = build_workload(spec, info, speaks, server.get("model"))
    label = spec.label or server.get("label") or server.get("engine") or "server"
    out = run_folder(spec, label)

    t0 = perf_counter()
    man = run_manifest(spec, info, server, label, t0)
    if spec.ignore_eos and not speaks.ignore_eos:  # the engine refuses it: lengths come from its config
        man["workload"]["ignore_eos"] = False
        man["workload"]["ignore_eos_not_sent"] = f"the {server.get('engine')} engine refuses ignore_eos"
    man["workload"]["tokenizer"] = {"path": str(tok_file), "sha256": workload.file_sha256(tok_file)}
    if spec.dataset in more.KINDS:
        man["workload"].update(more.describe(spec, warm, prompts))
    man["workload"]["inline_think_tags"] = think_tags(tok)  # generated text is split at <think> ... </think>
    if self_check is not None:
        man["self_check"] = self_check(spec)
    manifest.write(out / "manifest.json", man)

    # Warm up and measure. The collector is off while sending, and what is alive now (the
    # SDK's classes, the tokenizer, the prompts) is frozen out of its passes: a full pass
    # stalled the loop for up to 70 ms mid-run and cost ~2 % of the client's CPU, while sending
    # makes no cyclic garbage (gc.collect() found none after 2,048 good requests at C=1024,
    # nor after 19,744 failed).
    arrivals = schedule.arrival_times(len(prompts), spec.rate, spec.burstiness, spec.seed) if spec.rate else None
    arrivals = more.arrivals(spec, prompts) if spec.dataset in more.KINDS else arrivals
    if spec.ramp_up:  # a closed loop's (spec refuses it elsewhere)
        arrivals = schedule.ramp_times(len(prompts), spec.concurrency, spec.ramp_up)
    load = Load(spec.concurrency, spec.rate, arrivals, spec.duration, spec.request_timeout)
    load.connections = more.connections(spec, arrivals)
    transport = open_transport(spec, workload.token_counter(tok), think=think_tags(tok))
    make_body = request_body(info.model, spec.api, spec.ignore_eos and speaks.ignore_eos, spec.extra_body, speaks)
    writer = RecordWriter(out / "requests.jsonl")
    # The server's own metrics, scraped by a process of its own from here to the last request.
    scraper = Scraper.for_run(spec.base_url, server.get("engine"), out, spec.scrape_interval)
    scraper.start()
    # GPU power, energy, clocks and throttling, sampled by a process of its own into gpu.jsonl.
    gpus = GpuSampler(out / "gpu.jsonl", spec.gpu_interval, spec.gpu_id_list, off=spec.gpu_ids == "none")
    gpus.start()

    def measuring() -> None:
        gpus.measuring()
        scraper.measuring()

    bar = spec.progress and sys.stderr.isatty()
    runner_class, kinds_own = more.runner_class(spec, tok)
    runner = runner_class(transport, writer, make_body, t0, show_progress=bar, on_measure_start=measuring, **kinds_own)
    if spec.until_steady:
        runner.watch = steady.Watch(spec.ci_target, spec.min_requests, t0, closed=spec.rate is None)
    gc.collect()
    gc.freeze()
    gc.disable()
    n_workers, why = workers.choose(spec, len(prompts))
    workers.raise_open_files()
    ran = None
    cpu = time.process_time()
    try:
        if n_workers > 1:  # processes of their own, started together; requests.jsonl is their merged records
            writer.close()
            job = workers.Job(
                replace(spec, ignore_eos=spec.ignore_eos and speaks.ignore_eos),
                info.model,
                str(tok_file),
                t0,
                out,
                open_transport,
                functools.partial(request_body, speaks=speaks),
                _send,
                _event_loop_run,
                bar,
            )
            ran = workers.run(job, workers.deal(warm, prompts, load, n_workers), measuring)
            stopped_by = ran.stopped_by
        else:
            stopped_by = _event_loop_run(_send(runner, warm, prompts, load))
    finally:
        cpu = time.process_time() - cpu - runner.encode_cpu if ran is None else ran.cpu_s
        encode = runner.encode_cpu if ran is None else ran.encode_cpu_s
        gc.enable()
        gc.unfreeze()
        scraped = scraper.stop()  # its "after" scrape, its cost line; server.jsonl is complete
        sampled = gpus.stop()  # its cost line; gpu.jsonl is complete (None: no GPU telemetry)

    # Summarise from the file, as any later reader would.
    records = list(read_records(out / "requests.jsonl"))
    summary = metrics.summarise(records, gpu_count=man["gpu_count"])
    summary.update(session_metrics.summarise(records))  # per-turn latency and cache reuse; {} unless sessions
    partial = bool(stopped_by)
    summary["partial"] = partial
    summary["workers"] = {"count": 1, "cores": None, "died": []} if ran is None else ran.info
    summary["workers"]["why"] = why
    # The client's own cost while sending (warm-up included): a busy client inflates latency. Request
    # bodies are encoded before each phase's timing begins; that CPU is reported apart.
    chunks = sum(len(r.chunk_times) for r in records)
    summary["client_cpu_s"] = round(cpu, 3)
    summary["client_encode_cpu_s"] = round(encode, 6)  # often well under a millisecond
    summary["client_cpu_ms_per_1k_chunks"] = round(1e6 * cpu / chunks, 3) if chunks else None
    summary["scraper"] = scraped  # the scraper's own cost (another process); None when off
    summary["verdict"] = verdict.judge(summary, spec.min_success)
    summary["notes"] = verdict.notes(summary)
    if sampled is not None:  # GPU keys only where a GPU was sampled
        summary.update(energy.for_run(out / "gpu.jsonl", records, summary, t0))
        summary["notes"] += summary.pop("gpu_notes", [])
        summary["gpu_sampler"] = sampled
    if spec.until_steady:
        summary["steady"] = _steadiness(spec, records, runner.watch, stopped_by)
        if not summary["steady"]["steady"]:
            summary["notes"].append(
                f"not steady ({summary['steady']['why_not']}); stopped by {summary['steady']['stopped_by']}"
            )
    summary["checks"] = checks.run_checks(records, checks.read_server(out / "server.jsonl"), man, summary)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    man["partial"] = partial
    man["gpu_telemetry"] = gpu_devices(out / "gpu.jsonl", gpus.message)
    manifest.write(out / "manifest.json", man)
    return Measured(out, summary, man, partial, stopped_by)


# ---- before the run: workload, request bodies, run folder, manifest ----


# ---- the run itself ----


def _steadiness(spec: RunSpec, records, watch: steady.Watch, stopped_by: int) -> dict:
    """Why sending stopped, and the intervals over the finished records, as any later reader would judge
    them: over the window judged steady (none of the requests sent after it counts), else up to the last send."""
    sent = sum(1 for r in records if not r.warmup)
    why = (
        "steady"
        if watch.done
        else "interrupted"
        if stopped_by
        else "max_requests"
        if sent >= spec.max_requests
        else "max_duration"
    )
    return {"stopped_by": why, "steady_at_s": watch.at, "measured": sent} | steady.judge(
        records, spec.ci_target, spec.min_requests, end=watch.end, closed=spec.rate is None, whole_until=watch.at
    )


def open_transport(spec: RunSpec, count: TokenCounter, think: bool = False) -> Transport:
    """The transport `spec.transport` names, for the spec's server and endpoint; `think`: split
    inline <think> tags in generated text (bench.instrument.reasoning)."""
    key = spec.api_key
    if spec.transport == "openai":
        from bench.instrument.client_openai import OpenAITransport

        return OpenAITransport(spec.base_url, spec.api, key, spec.request_timeout, count, spec.connect_timeout, think)
    from bench.instrument.client import RawTransport

    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return RawTransport(
        spec.base_url,
        spec.api,
        headers,
        count,
        spec.connect_timeout,
        spec.first_token_timeout,
        spec.request_timeout,
        think=think,
    )


def _event_loop_run(coro):
    """uvloop when installed: its per-callback cost is a fraction of asyncio's."""
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


async def _send(runner: Runner, warm: list[workload.Prompt], prompts: list[workload.Prompt], load: Load) -> bool:
    """Warm up and measure; True when interrupted (the records written so far are kept)."""
    loop = asyncio.get_running_loop()
    # Ctrl-C and SIGTERM stop sending and cancel what is in flight; every request leaves its record.
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, runner.interrupt, signum)
    try:
        await runner.run(warm, prompts, load)
    except asyncio.CancelledError:
        pass
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        await runner.transport.close()
        runner.write_ended()
        runner.writer.close()
    return runner.stopping
