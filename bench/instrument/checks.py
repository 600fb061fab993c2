"""Checks that a run measured what it claims, from the server's own telemetry and the records.

Each check is {check, status: pass|warn|fail, figure, limit, why}, computed over the measured
window: counters from the full scrapes just before and just after it (server.jsonl phases
"before" and "after"), levels from the periodic scrapes inside it (phase "measure"). A check
whose data the server does not export is left out; `checks` says which ran. The figures:
- prefix_cache: share of prompt tokens the prefix cache served (expected ~0 for unique prompts,
  ~prefix_len / input_len with a shared prefix; for sessions and traces at least the
  workload's theoretical_prefix_hit_rate less 10 points, a larger shortfall fails);
- preemptions: requests the server preempted (KV cache full) during the window;
- queueing: most requests waiting at the server while measuring (a closed loop at a concurrency
  the server admits should have none);
- kv_cache: peak KV-cache usage;
- steadiness: variation of running requests and of the token rate in the middle 80 % of the
  window, and the window's length against the longest request;
- tokens: the server's prompt and generation counters against the records' sums;
- ttft_agreement: the engine's mean TTFT (its histogram) against the client's, which may be above
  it by at most the width of the engine's bucket where its mean falls;
- client: the client's send lag p99 and CPU per 1,000 chunks;
- hardware: achieved TFLOP/s and memory bandwidth per GPU, and their share of the GPU's peak.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bench.instrument import metrics
from bench.instrument.records import Record

# Dense FP8 / BF16 tensor peaks (TFLOP/s) and HBM bandwidth (TB/s) per GPU, from the vendors'
# data sheets (SXM parts). A GPU not listed gets no share, only the achieved figure.
PEAKS = {
    "H100": {"fp8_tflops": 1979, "bf16_tflops": 989, "hbm_tb_s": 3.35},
    "H200": {"fp8_tflops": 1979, "bf16_tflops": 989, "hbm_tb_s": 4.8},
    "B200": {"fp8_tflops": 4500, "bf16_tflops": 2250, "hbm_tb_s": 8.0},
}
CPU_CEILING_MS = 15.0  # client CPU per 1,000 chunks above which the client may be the limit
CLOSED_LAG_MS = 20.0  # send lag p99 a closed loop may have (rounds of requests sent together)
MIN_CHUNKS_FOR_CPU = 10_000  # below this the client's start-up dominates its CPU per chunk
STEADY_CV = 0.15  # coefficient of variation of running requests / token rate in the steady part
REUSE_SHORTFALL = 0.1  # a cache serving this much less than the workload repeats has lost prefixes


def read_server(path: Path) -> list[dict]:
    """The scrape lines of a server.jsonl (a torn last line is skipped)."""
    out = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def _check(name: str, status: str, figure, limit, why: str) -> dict:
    return {"check": name, "status": status, "figure": figure, "limit": limit, "why": why}


def _delta(before: dict, after: dict, role: str) -> float | None:
    a, b = (before.get("values") or {}).get(role), (after.get("values") or {}).get(role)
    return None if a is None or b is None else b - a


def run_checks(records: list[Record], server: list[dict], manifest: dict, summary: dict) -> list[dict]:
    """Every check the data allows, in the order of the module docstring."""
    scrapes = [s for s in server if s.get("kind") == "scrape"]
    before = next((s for s in scrapes if s.get("phase") == "before"), None)
    after = next((s for s in reversed(scrapes) if s.get("phase") == "after"), None)
    during = [s for s in scrapes if s.get("phase") == "measure"]
    out: list[dict] = []
    if before and after:
        out += _counter_checks(records, before, after, manifest, summary)
    if during:
        out += _level_checks(during, records)
    elif before and "waiting" in before.get("values", {}):
        out.append(_unscraped(summary))
    out += _client_checks(manifest, summary)
    return out


def _counter_checks(records: list[Record], before: dict, after: dict, manifest: dict, summary: dict) -> list[dict]:
    out = []
    wl = manifest.get("workload") or {}
    queries, hits = _delta(before, after, "prefix_queries"), _delta(before, after, "prefix_hits")
    reuse = summary.get("theoretical_prefix_hit_rate", wl.get("theoretical_prefix_hit_rate"))
    if queries and reuse is not None:
        out.append(_reuse_check(hits / queries, reuse))
    elif queries and wl.get("conversations") is None:  # a session run without prompt usage has no expectation
        rate = hits / queries
        shared = (wl.get("prefix_len") or 0) / wl["input_len"] if wl.get("input_len") else 0.0
        ok = abs(rate - shared) <= 0.1
        why = f"the prefix cache served {rate:.1%} of prompt tokens, expected about {shared:.0%}"
        out.append(_check("prefix_cache", "pass" if ok else "fail", round(rate, 4), round(shared, 4), why))
    preempted = _delta(before, after, "preemptions")
    if preempted is not None:
        why = f"{preempted:.0f} preemptions: the KV cache filled and requests were restarted" if preempted else "none"
        out.append(_check("preemptions", "fail" if preempted else "pass", preempted, 0, why))
    measured = [r for r in records if not r.warmup]
    for role, mine, name in (
        ("prompt_tokens", sum(r.prompt_tokens or 0 for r in measured), "prompt"),
        ("generation_tokens", sum(r.completion_tokens or 0 for r in measured), "generated"),
    ):
        theirs = _delta(before, after, role)
        if theirs is not None and mine:
            off = theirs / mine - 1
            why = f"server counted {theirs:.0f} {name} tokens, the records {mine:.0f} ({off:+.1%})"
            out.append(_check(f"tokens_{name}", "pass" if abs(off) <= 0.01 else "fail", theirs, mine, why))
    hist_a, hist_b = (before.get("histograms") or {}).get("ttft"), (after.get("histograms") or {}).get("ttft")
    mean_client = summary.get("mean_ttft_ms")
    if hist_a and hist_b and mean_client and hist_b["count"] > hist_a["count"]:
        server_ms = 1e3 * (hist_b["sum"] - hist_a["sum"]) / (hist_b["count"] - hist_a["count"])
        gap = mean_client - server_ms
        # The client's TTFT also holds the server's HTTP front end and the network, so the gap is
        # small and positive; "small" is the engine histogram's own resolution where the mean falls.
        width = _bucket_width(hist_b.get("buckets") or [], server_ms / 1e3) * 1e3 or max(5.0, 0.2 * mean_client)
        status = "pass" if -1.0 <= gap <= width else "warn"
        why = (
            f"engine mean TTFT {server_ms:.2f} ms, client {mean_client:.2f} ms (client - engine {gap:+.2f} ms; "
            f"the engine's bucket there is {width:g} ms wide)"
        )
        out.append(_check("ttft_agreement", status, round(gap, 3), round(width, 3), why))
    out += _hardware(before, after, manifest, summary)
    return out


def _reuse_check(rate: float, reuse: float) -> dict:
    """A session or trace workload repeats `reuse` of its prompt tokens: the cache should serve about
    that much (more is fine: it may keep answers too); a shortfall means the prefix was lost."""
    short = reuse - rate
    why = f"the prefix cache served {rate:.1%} of prompt tokens; the workload repeats {reuse:.1%}"
    if short > REUSE_SHORTFALL:
        why += " (history altered between turns, prompts not built token for token, or the cache evicted them)"
    status = "fail" if short > REUSE_SHORTFALL else "pass"
    return _check("prefix_cache", status, round(rate, 4), round(reuse - REUSE_SHORTFALL, 4), why)


def _bucket_width(buckets: list, seconds: float) -> float:
    """Width (s) of the histogram bucket holding `seconds`; 0 when the buckets do not say."""
    edges = [0.0] + [float(le) for le, _ in buckets]
    for lo, hi in zip(edges, edges[1:]):
        if lo < seconds <= hi:
            return hi - lo
    return 0.0


def _hardware(before: dict, after: dict, manifest: dict, summary: dict) -> list[dict]:
    window = summary.get("duration") or 0
    gpus = (after.get("values") or {}).get("gpus") or manifest.get("gpu_count") or 1
    flops, read, write = (_delta(before, after, r) for r in ("flops", "read_bytes", "write_bytes"))
    if not window or flops is None:
        return []
    names = [g.get("name", "") for g in manifest.get("gpus") or []]
    peak = next((p for key, p in PEAKS.items() if names and key in names[0]), None)
    tflops = flops / window / gpus / 1e12
    tb_s = ((read or 0) + (write or 0)) / window / gpus / 1e12
    share = f", {tflops / peak['fp8_tflops']:.1%} of FP8 peak and {tb_s / peak['hbm_tb_s']:.1%} of HBM" if peak else ""
    where = "not applicable (no GPU)" if not names else ("peak unknown for " + names[0]) if not peak else names[0]
    why = f"{tflops:.2f} TFLOP/s and {tb_s:.3f} TB/s per GPU{share} ({where})"
    return [_check("hardware", "pass", {"tflops_per_gpu": tflops, "tb_s_per_gpu": tb_s}, peak, why)]


def _level_checks(during: list[dict], records: list[Record]) -> list[dict]:
    out = []
    waiting = [s["values"]["waiting"] for s in during if "waiting" in s.get("values", {})]
    if waiting:
        most = max(waiting)
        why = f"up to {most:.0f} requests waited at the server" if most else "no request waited at the server"
        out.append(_check("queueing", "warn" if most else "pass", most, 0, why))
    kv = [s["values"]["kv_usage"] for s in during if "kv_usage" in s.get("values", {})]
    if kv:
        peak = max(kv)
        out.append(
            _check("kv_cache", "warn" if peak > 0.95 else "pass", round(peak, 4), 0.95, f"peak KV-cache use {peak:.0%}")
        )
    out += _steadiness(during, records)
    return out


def _unscraped(summary: dict) -> dict:
    """The server exports its queue, but no periodic scrape fell inside the window (a run shorter
    than the scrape interval, or scrapes slowed by a loaded server): queueing went unchecked."""
    window = summary.get("duration") or 0
    why = (
        f"no scrape fell inside the {window:.2f} s measured window, so queueing and KV-cache use went unchecked; "
        "lengthen the run or shorten --scrape-interval"
    )
    return _check("queueing", "warn", None, 0, why)


def _cv(values: list[float]) -> float:
    a = np.asarray(values, dtype=float)
    return float(a.std() / a.mean()) if len(a) and a.mean() else 0.0


def _steadiness(during: list[dict], records: list[Record]) -> list[dict]:
    """Running requests and the server's token rate in the middle 80 % of the window, and whether
    the window is at least twice the longest request (else the load never settled)."""
    times = [s["t"] for s in during]
    if len(times) < 5 or any("running" not in s["values"] for s in during):
        return []
    lo, hi = times[0] + 0.1 * (times[-1] - times[0]), times[-1] - 0.1 * (times[-1] - times[0])
    mid = [s for s in during if lo <= s["t"] <= hi]
    if len(mid) < 3:
        return []
    cv = _cv([s["values"]["running"] for s in mid])
    why = f"running requests vary by {cv:.0%}"
    gen = [(s["t"], s["values"].get("generation_tokens")) for s in mid]
    if all(g is not None for _, g in gen):
        rates = [(g1 - g0) / (t1 - t0) for (t0, g0), (t1, g1) in zip(gen, gen[1:]) if t1 > t0]
        rate_cv = _cv(rates) if len(rates) >= 2 else 0.0
        cv = max(cv, rate_cv)
        why += f", the token rate by {rate_cv:.0%}"
    why += " in the middle 80 % of the window"
    longest = max((metrics.e2el(r) for r in metrics.timed_requests(records)), default=0.0)
    long_enough = times[-1] - times[0] >= 2 * longest
    if not long_enough:
        why += f"; the window ({times[-1] - times[0]:.1f} s) is under twice the longest request ({longest:.1f} s)"
    status = "pass" if cv <= STEADY_CV and long_enough else "warn"
    return [_check("steadiness", status, round(cv, 4), STEADY_CV, why)]


def _client_checks(manifest: dict, summary: dict) -> list[dict]:
    out = []
    lag = summary.get("p99_send_lag_ms")
    closed = (manifest.get("load") or {}).get("rate") is None and "time_scale" not in (manifest.get("load") or {})
    if lag is not None:
        # A closed loop at high concurrency sends whole rounds at once when many streams end together.
        limit = CLOSED_LAG_MS if closed else 1.0
        why = f"send lag p99 {lag:.2f} ms ({'closed' if closed else 'open'} loop, limit {limit:g} ms)"
        if lag >= limit:
            why += (
                ": requests went out later than due, so the load was lighter than planned; the client "
                "was starved of CPU (an engine on its cores) or could not keep up (client_cpu)"
            )
        out.append(_check("client_send_lag", "pass" if lag < limit else "warn", round(lag, 3), limit, why))
    cpu = summary.get("client_cpu_ms_per_1k_chunks")
    if cpu is not None and (summary.get("total_chunks") or 0) >= MIN_CHUNKS_FOR_CPU:
        why = f"client CPU {cpu:.1f} ms per 1,000 chunks (ceiling {CPU_CEILING_MS:g})"
        out.append(_check("client_cpu", "pass" if cpu <= CPU_CEILING_MS else "warn", cpu, CPU_CEILING_MS, why))
    return out
