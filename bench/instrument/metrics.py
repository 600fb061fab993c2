"""Records in, numbers out: the summary of one load point.

Definitions (the README repeats them word for word):

- Measured requests: every record with `warmup` false; warm-up requests are left out of everything.
  A request succeeded when its `error` is empty; `completed` counts those. `interrupted` counts
  the requests the run itself cut short (error kind `interrupted`: Ctrl-C, SIGTERM), `failed`
  the rest; `success_rate` = completed / (measured - interrupted).
- Window: first `sent` to last completion (`last`, else `first`, else `sent`) over measured
  requests, unless the caller gives `duration` (an import keeps the original run's duration).
- TTFT: `first - sent`. E2EL: `last - sent`. Both also from `scheduled` instead of `sent`
  (`*_ttft_from_scheduled_ms`, `*_e2el_from_scheduled_ms`) so a client that sends late shows.
- Output tokens: `completion_tokens` (the server's usage, or counted by the client when the server
  sent none, see `usage_source`). Input tokens: `prompt_tokens`, else the requested `input_len`.
- TPOT, per request with more than one output token: `(E2EL - TTFT) / (output_tokens - 1)`;
  the statistics are over requests, as in vLLM.
- ITL: the gaps between consecutive content chunks (`chunk_times`), pooled over requests.
  Token ITL: each gap divided by the token count k of the chunk that ends it, counted once per
  token, so a k-token chunk adds k values of gap/k; `multi_token_chunks` says how many chunks
  had k > 1. Token ITL is null when any request lacks per-chunk token counts. When the server
  reports usage only at the end, the client shares the total among the chunks
  (`chunk_tokens_source` says how, per request); `chunk_token_mismatches` counts the requests
  whose chunk counts do not add up to their output tokens.
  `zero_gap_chunks` counts gaps under 0.1 ms (two chunks that reached the client together; the
  server wrote them in one go, or the client read them in one go), `zero_gap_share` their share
  of all gaps, `requests_with_zero_gaps` the share of requests with any.
- Interactivity (tok/s/user): 1 / TPOT per request, reported as a distribution.
- Send lag: `sent - scheduled` over all measured requests.
- Throughputs over the window: `request_throughput` (completed/s), `output_throughput`
  (output tok/s), `total_token_throughput` (input + output tok/s); `*_per_gpu` divides by the GPU
  count when known. `request_goodput`: completed requests meeting every SLO given (ms, for ttft,
  tpot, e2el; a one-token request counts TPOT 0), per second.
- Statistics: mean, median, std (population, as numpy and vLLM), and percentiles by numpy's
  linear interpolation, as vLLM; keys `<stat>_<metric>_ms` in vLLM's spelling (`p99_ttft_ms`).
  A statistic over no values is null.
- Reasoning (bench.instrument.reasoning says how chunks are labelled): TTFT stays the first
  chunk of either kind, as vLLM measures it. TTFO, time to first output (answer) token:
  `first_answer - sent` (`mean_ttfo_ms` ...), over timed requests whose answer began;
  `requests_without_answer` counts those whose output ended while still reasoning. Without
  reasoning the first answer chunk is the first chunk, so TTFO equals TTFT; records older than
  these fields (and imports) give null. Reasoning tokens: `reasoning_tokens` (the server's
  usage.completion_tokens_details.reasoning_tokens, else counted from the chunks it labelled
  reasoning, see `reasoning_tokens_source`); answer tokens: output tokens minus reasoning tokens.
  Answer TPOT, per request with more than one answer token: `(last - first_answer) /
  (answer_tokens - 1)`. `requests_with_reasoning` counts timed requests with a reasoning chunk.
- Length checks: `input_len_mismatches` counts successful requests whose server-reported prompt
  tokens differ from the requested input length; `output_len_mismatches` the same for output.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from bench.errors import UserError
from bench.instrument.records import Record

PERCENTILES = (50, 90, 95, 99)
INTERACTIVITY_PERCENTILES = (1, 5, 10, 50, 90, 99)  # the low tail is the slow users
SLO_NAMES = ("ttft", "tpot", "e2el")
TOGETHER = 1e-4  # s: a chunk gap under this means the two chunks reached the client together


def _stats(
    name: str, values: list[float], scale: float = 1000.0, unit: str = "ms", percentiles: Iterable[float] = PERCENTILES
) -> dict:
    """mean/median/std/pNN of `values` (seconds unless scale says otherwise), vLLM's key names."""
    import numpy as np

    keys = ["mean", "median", "std"] + [f"p{p:g}" for p in percentiles]
    if not values:
        return {f"{k}_{name}_{unit}": None for k in keys}
    a = np.asarray(values, dtype=float) * scale
    out = {
        f"mean_{name}_{unit}": float(np.mean(a)),
        f"median_{name}_{unit}": float(np.median(a)),
        f"std_{name}_{unit}": float(np.std(a)),
    }
    for p in percentiles:
        out[f"p{p:g}_{name}_{unit}"] = float(np.percentile(a, p))
    return out


def output_tokens(r: Record) -> int:
    """Server usage (or the client's count); without either, the chunk token counts."""
    if r.completion_tokens is not None:
        return r.completion_tokens
    return sum(r.chunk_tokens) if r.chunk_tokens else len(r.chunk_times)


# ---- one request: the one definition of each latency (seconds; every other room calls these) ----


def end(r: Record) -> float:
    """When the request completed: its last content chunk, else its first, else its send."""
    for t in (r.last, r.first):
        if t is not None:
            return t
    return r.sent


def ttft(r: Record) -> float:
    """Time to first token: first content chunk minus send time (for a request that has one)."""
    return r.first - r.sent


def e2el(r: Record) -> float:
    """End-to-end latency: completion minus send time."""
    return end(r) - r.sent


def tpot(r: Record) -> float | None:
    """Time per output token after the first; None with fewer than two tokens or no chunk."""
    n = output_tokens(r)
    if r.first is None or n <= 1:
        return None
    return (end(r) - r.first) / (n - 1)


def ttfo(r: Record) -> float | None:
    """Time to first output (answer) token: first answer chunk minus send time; None without one."""
    return None if r.first_answer is None else r.first_answer - r.sent


def answer_tokens(r: Record) -> int:
    """Output tokens that are not reasoning."""
    return output_tokens(r) - (r.reasoning_tokens or 0)


def answer_tpot(r: Record) -> float | None:
    """Time per answer token after the first; None with fewer than two answer tokens."""
    n = answer_tokens(r)
    if r.first_answer is None or n <= 1:
        return None
    return (end(r) - r.first_answer) / (n - 1)


def timed_requests(records: Iterable[Record]) -> list[Record]:
    """The records latencies are taken over: measured (not warm-up), successful, with a content chunk."""
    return [r for r in records if not r.warmup and r.ok and r.first is not None]


def window(records: Iterable[Record]) -> tuple[float, float] | None:
    """The measured window: first send to last completion over measured (not warm-up) requests."""
    recs = [r for r in records if not r.warmup]
    return (min(r.sent for r in recs), max(end(r) for r in recs)) if recs else None


def chunk_gaps(r: Record) -> list[float]:
    """The gaps between consecutive content chunks (the ITL values of one request)."""
    t = r.chunk_times
    return [b - a for a, b in zip(t, t[1:])]


def summarise(
    records: Iterable[Record],
    *,
    duration: float | None = None,
    gpu_count: int | None = None,
    goodput_slo: dict | None = None,
) -> dict:
    """The summary.json of one load point; see the module docstring for every definition."""
    all_recs = list(records)
    recs = [r for r in all_recs if not r.warmup]
    ok = [r for r in recs if r.ok]
    timed = [r for r in ok if r.first is not None]

    # Window and totals
    if duration is None:
        start, stop = window(recs) or (0.0, 0.0)
        duration = stop - start
    out_tokens = sum(output_tokens(r) for r in ok)
    in_tokens = sum((r.prompt_tokens if r.prompt_tokens is not None else r.input_len or 0) for r in ok)

    def per_s(x: float) -> float | None:
        return x / duration if duration > 0 else None

    interrupted = sum(1 for r in recs if r.error_kind == "interrupted")
    judged = len(recs) - interrupted  # a request the run itself cut short says nothing of the server
    s: dict = {
        "duration": duration,
        "completed": len(ok),
        "failed": judged - len(ok),
        "interrupted": interrupted,
        "success_rate": len(ok) / judged if judged else None,
        "warmup_excluded": len(all_recs) - len(recs),
        "total_input_tokens": in_tokens,
        "total_output_tokens": out_tokens,
        "request_throughput": per_s(len(ok)),
        "output_throughput": per_s(out_tokens),
        "total_token_throughput": per_s(in_tokens + out_tokens),
    }

    # Latencies, as vLLM computes them
    ttfts = [ttft(r) for r in timed]
    e2els = [e2el(r) for r in timed]
    tpots = [t for t in map(tpot, timed) if t is not None]
    itls: list[float] = []
    token_itls: list[float] = []
    chunks = multi = max_k = no_counts = together = with_together = 0
    for r in timed:
        gaps = chunk_gaps(r)
        itls += gaps
        n_together = sum(1 for g in gaps if g < TOGETHER)
        together += n_together
        with_together += n_together > 0
        chunks += len(r.chunk_times)
        if len(r.chunk_tokens) != len(r.chunk_times):
            no_counts += 1  # token counts unknown: no token ITL from this request
            continue
        multi += sum(1 for k in r.chunk_tokens if k > 1)
        max_k = max([max_k, *r.chunk_tokens])
        for gap, k in zip(gaps, r.chunk_tokens[1:]):
            token_itls += [gap / k] * k if k > 0 else []
    if no_counts:
        token_itls = []  # a subset of requests would bias it: null rather than misleading
    for name, values in (("ttft", ttfts), ("tpot", tpots), ("itl", itls), ("e2el", e2els), ("token_itl", token_itls)):
        s.update(_stats(name, values))
    s.update(
        {
            "total_chunks": chunks,
            "multi_token_chunks": multi,
            "max_chunk_tokens": max_k,
            "requests_without_chunk_tokens": no_counts,
            "chunk_tokens_source": dict(Counter(r.chunk_tokens_source or "not recorded" for r in timed)),
            "chunk_token_mismatches": sum(
                1 for r in timed if r.chunk_tokens and sum(r.chunk_tokens) != output_tokens(r)
            ),
            "zero_gap_chunks": together,
            "zero_gap_share": together / len(itls) if itls else None,
            "requests_with_zero_gaps": with_together / len(timed) if timed else None,
        }
    )
    s.update(_reasoning(timed, ok))
    s.update(
        _stats(
            "interactivity",
            [1.0 / t for t in tpots if t > 0],
            scale=1.0,
            unit="tok_s_user",
            percentiles=INTERACTIVITY_PERCENTILES,
        )
    )

    # Client honesty: latencies from the schedule, and how late sends were
    s.update(_stats("ttft_from_scheduled", [r.first - r.scheduled for r in timed]))
    s.update(_stats("e2el_from_scheduled", [end(r) - r.scheduled for r in timed]))
    lags = [r.sent - r.scheduled for r in recs]
    s.update(_stats("send_lag", lags))
    s["max_send_lag_ms"] = max(lags) * 1000 if lags else None

    # Errors, token accounting
    s["errors_by_kind"] = dict(Counter(r.error_kind or "other" for r in recs if not r.ok))
    s["input_len_mismatches"] = sum(
        1 for r in ok if r.prompt_tokens is not None and r.input_len is not None and r.prompt_tokens != r.input_len
    )
    s["output_len_mismatches"] = sum(1 for r in ok if r.output_len is not None and output_tokens(r) != r.output_len)
    s["usage_source"] = dict(Counter(r.usage_source for r in ok))
    s["output_tokens_counted"] = sum(1 for r in ok if r.usage_source == "counted")
    s["input_tokens_from_request"] = sum(1 for r in ok if r.prompt_tokens is None)

    if goodput_slo:
        s.update(_goodput(timed, goodput_slo, per_s))
    if gpu_count:
        s["gpu_count"] = gpu_count
        for k in ("request_throughput", "output_throughput", "total_token_throughput"):
            s[f"{k}_per_gpu"] = s[k] / gpu_count if s[k] is not None else None
    return s


def _reasoning(timed: list[Record], ok: list[Record]) -> dict:
    """TTFO, answer TPOT and the reasoning / answer token split (see the module docstring)."""
    labelled = [r for r in timed if r.reasoning_tokens is not None]  # records that carry the fields
    out = {
        "requests_with_reasoning": sum(1 for r in timed if r.first_reasoning is not None),
        "requests_without_answer": sum(1 for r in labelled if r.first_answer is None),
        "total_reasoning_tokens": sum(r.reasoning_tokens or 0 for r in ok),
        "total_answer_tokens": sum(answer_tokens(r) for r in ok),
        "reasoning_tokens_source": dict(Counter(r.reasoning_source for r in ok if r.reasoning_tokens is not None)),
    }
    out.update(_stats("ttfo", [t for t in map(ttfo, timed) if t is not None]))
    out.update(_stats("answer_tpot", [t for t in map(answer_tpot, labelled) if t is not None]))
    return out


def _goodput(timed: list[Record], slo: dict, per_s) -> dict:
    bad = sorted(set(slo) - set(SLO_NAMES))
    if bad:
        raise UserError(f"unknown SLO name {', '.join(bad)}: use ttft, tpot or e2el (in ms).")
    good = 0
    for r in timed:
        value = {"ttft": ttft(r), "tpot": tpot(r) or 0.0, "e2el": e2el(r)}
        good += all(value[k] * 1000 <= float(v) for k, v in slo.items())
    return {"request_goodput": per_s(good), "goodput_slo_ms": dict(slo), "good_requests": good}


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.2f}"
    if isinstance(v, dict):
        return ", ".join(f"{k}: {n}" for k, n in v.items()) or "none"
    return str(v)


def format_summary(summary: dict) -> str:
    """Two terminal tables: counts and throughputs, then one latency row per metric."""
    from tabulate import tabulate

    s = summary
    head = [
        ("Duration (s)", s.get("duration")),
        ("Completed requests", s.get("completed")),
        ("Failed requests", s.get("failed")),
        ("Errors by kind", s.get("errors_by_kind")),
        ("Total input tokens", s.get("total_input_tokens")),
        ("Total output tokens", s.get("total_output_tokens")),
        ("Request throughput (req/s)", s.get("request_throughput")),
        ("Output throughput (tok/s)", s.get("output_throughput")),
        ("Total token throughput (tok/s)", s.get("total_token_throughput")),
    ]
    if "request_goodput" in s:
        head.append(("Request goodput (req/s)", s["request_goodput"]))
    if s.get("gpu_count"):
        head.append((f"Output throughput per GPU (tok/s, {s['gpu_count']} GPUs)", s.get("output_throughput_per_gpu")))
    if s.get("gpu_energy_j") is not None:  # GPUs sampled (bench.instrument.energy defines these)
        head += [
            (f"GPU energy (J, {s.get('gpu_energy_source')}, {s.get('gpu_telemetry_count')} GPUs)", s["gpu_energy_j"]),
            ("Energy per output token (J)", s.get("joules_per_output_token")),
            ("Mean GPU power (W, all sampled GPUs)", s.get("mean_gpu_power_w")),
            ("GPU throttled (share of samples)", s.get("gpu_throttled_share")),
        ]
    if s.get("requests_with_reasoning"):
        head.append(
            ("Reasoning / answer tokens", f"{s.get('total_reasoning_tokens')} / {s.get('total_answer_tokens')}")
        )
        head.append(("Requests without an answer", s.get("requests_without_answer")))
    head += [
        ("Multi-token chunks", f"{s.get('multi_token_chunks')} of {s.get('total_chunks')}"),
        ("Token usage source", s.get("usage_source")),
        ("Length mismatches (input / output)", f"{s.get('input_len_mismatches')} / {s.get('output_len_mismatches')}"),
    ]
    rows = [
        ("TTFT (ms)", "ttft_ms"),
        ("TPOT (ms)", "tpot_ms"),
        ("ITL (ms)", "itl_ms"),
        ("Token ITL (ms)", "token_itl_ms"),
        ("E2EL (ms)", "e2el_ms"),
        ("TTFT from schedule (ms)", "ttft_from_scheduled_ms"),
        ("E2EL from schedule (ms)", "e2el_from_scheduled_ms"),
        ("Send lag (ms)", "send_lag_ms"),
        ("Interactivity (tok/s/user)", "interactivity_tok_s_user"),
    ]
    if s.get("requests_with_reasoning"):  # beside TTFT and TPOT: the first answer token, answer-only TPOT
        rows[1:1] = [("TTFO, first answer token (ms)", "ttfo_ms")]
        rows[3:3] = [("Answer TPOT (ms)", "answer_tpot_ms")]
    cols = ("mean", "median", "std", "p90", "p99")
    lat = [[label] + [_fmt(s.get(f"{c}_{key}")) for c in cols] for label, key in rows]
    return (
        tabulate([(k, _fmt(v)) for k, v in head], tablefmt="simple", disable_numparse=True)
        + "\n\n"
        + tabulate(
            lat,
            headers=["latency", *cols],
            tablefmt="simple",
            disable_numparse=True,
            colalign=("left",) + ("right",) * 5,
        )
    )
