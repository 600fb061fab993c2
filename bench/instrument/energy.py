"""GPU energy over the measured window, from gpu.jsonl: the one definition of every energy key.

Per GPU, between consecutive samples (an interval), energy is the energy counter's difference
when both ends have it and it did not go down, else the trapezoid of the two power readings;
an interval partly outside the window counts in proportion (power held steady across it). Both
are also summed on their own, so they can be set side by side:
  energy_j             counter where it can, else integrated power; energy_source says which:
                       "counter", "power" or "mixed" (some intervals each way)
  counter_energy_j     the counter alone, null unless every interval in the window had it
  integrated_energy_j  the trapezoid of power alone, null unless every interval had two readings
  energy_diff_pct      (integrated / counter - 1) x 100; the counter is the reference
  mean_power_w         energy_j / the time the intervals cover (coverage: that / the window)
  integrated_from      the power readings the trapezoid used: power_instant_w (the driver's
                       instantaneous draw) where both ends have it, else power_w (on recent GPUs a
                       1 s average, which lags a step in load by ~0.5 s)
A counter that goes down (driver reload, wrap-around) is a reset: that interval uses power.
A gap between samples longer than GAP_INTERVALS intervals is counted; a GPU that answered with an
error, or stopped being sampled before the window ended, is "lost": its energy covers what was
sampled, and a note says so. Throttling: the share of samples in the window with each clock
event reason of bench.instrument.gpu.THROTTLING set.

Totals: the sums over GPUs, and per token over the summary's tokens:
  gpu_energy_j, gpu_energy_source, gpu_energy_counter_j, gpu_energy_integrated_j,
  gpu_energy_diff_pct, mean_gpu_power_w (sum of the GPUs' mean power), joules_per_output_token,
  joules_per_total_token, output_tokens_per_joule, output_tok_per_s_per_kw (output tokens per
  second per kW of mean GPU power), gpu_throttled_share, gpu_throttle_reasons {reason: share},
  gpu_telemetry_count (GPUs sampled), gpu_window_coverage (the least covered GPU's), gpu_sample_gaps,
  gpu_max_sample_gap_s, gpu_lost [indices], gpu_energy_counter_resets, gpu_mean_sm_clock_mhz,
  gpu_mean_util_pct, gpu_max_temp_c, and per GPU in gpu_energy [{index, name, ...}].
"""

from __future__ import annotations

from pathlib import Path
from statistics import median

from bench.instrument import metrics
from bench.instrument.gpu import REASONS, THROTTLING
from bench.instrument.gpu_sampler import read_lines

GAP_INTERVALS = 5  # a gap of more than this many sampling intervals is flagged


def series(lines: list[dict]) -> tuple[dict, dict[int, list[tuple[float, dict]]]]:
    """(the devices line, index -> [(t, sample)] in time order, error samples included)."""
    devices = next((x for x in lines if x.get("kind") == "devices"), {})
    out: dict[int, list] = {g["index"]: [] for g in devices.get("gpus") or [] if "index" in g}
    for line in lines:
        if line.get("kind") == "sample":
            for g in line.get("gpus") or []:
                out.setdefault(g.get("index"), []).append((line["t"], g))
    for s in out.values():
        s.sort(key=lambda x: x[0])
    return devices, out


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def _trapezoid(a: dict, b: dict, dt: float, fields: set[str]) -> float | None:
    """Energy between two samples from their power readings (J), the instantaneous draw where the driver gives it."""
    for field in ("power_instant_w", "power_w"):
        if a.get(field) is not None and b.get(field) is not None:
            fields.add(field)
            return (a[field] + b[field]) / 2 * dt
    return None


def _counter_spans(good: list[tuple[float, dict]], trapezoids: list[float | None]) -> dict[int, float | str]:
    """Interval k -> the energy counter's share of it (J), or "reset" (counted once per span).

    The sampler reads the counter only every so often (one read costs ~4 ms of CPU on an H200's
    driver, the rest of a sample ~30 us), so a span between two counter reads holds several
    intervals: the counter's energy over the span is shared among them by their integrated power
    (by time where power is missing). With a counter in every sample a span is one interval."""
    marks = [k for k, (_, g) in enumerate(good) if g.get("energy_j") is not None]
    out: dict[int, float | str] = {}
    for i, j in zip(marks, marks[1:]):
        e = good[j][1]["energy_j"] - good[i][1]["energy_j"]
        if e < 0:
            out[i] = "reset"
            continue
        parts = trapezoids[i:j]
        whole = sum(parts) if all(p is not None for p in parts) else None
        span = good[j][0] - good[i][0]
        for k in range(i, j):
            dt = good[k + 1][0] - good[k][0]
            out[k] = e * parts[k - i] / whole if whole else e * dt / span if span > 0 else 0.0
    return out


def one_gpu(samples: list[tuple[float, dict]], start: float, end: float, interval: float) -> dict:
    """The energy block of one GPU over [start, end]; see the module docstring."""
    good = [(t, g) for t, g in samples if "error" not in g]
    errors = [t for t, g in samples if "error" in g and t <= end]
    energy = counter = power = covered = 0.0
    used = {"counter": 0, "power": 0}
    all_counter = all_power = True
    gaps, max_gap, resets = 0, 0.0, 0
    fields: set[str] = set()  # which power readings the trapezoid used
    trapezoids = [_trapezoid(a, b, t1 - t0, fields) for (t0, a), (t1, b) in zip(good, good[1:])]
    counted = _counter_spans(good, trapezoids)
    for k, ((t0, _), (t1, _)) in enumerate(zip(good, good[1:])):
        share = max(0.0, min(t1, end) - max(t0, start)) / (t1 - t0) if t1 > t0 else 0.0
        if share <= 0:
            continue
        dt = t1 - t0
        if dt > GAP_INTERVALS * interval:
            gaps += 1
        max_gap = max(max_gap, dt)
        by_power = trapezoids[k]
        by_counter = counted.get(k)
        if by_counter == "reset":
            by_counter = None
            resets += 1
        all_counter &= by_counter is not None
        all_power &= by_power is not None
        counter += share * (by_counter or 0.0)
        power += share * (by_power or 0.0)
        best = by_counter if by_counter is not None else by_power
        if best is not None:
            used["counter" if by_counter is not None else "power"] += 1
            energy += share * best
            covered += share * dt
    inside = [g for t, g in good if start <= t <= end]
    masks = [g["throttle"] for g in inside if g.get("throttle") is not None]
    reasons = {name: sum(1 for m in masks if m & bit) / len(masks) for bit, name in REASONS.items()} if masks else {}
    measured = used["counter"] + used["power"]
    source = None if not measured else "counter" if not used["power"] else "power" if not used["counter"] else "mixed"
    return {
        "energy_j": energy if measured else None,
        "energy_source": source,
        "counter_energy_j": counter if measured and all_counter else None,
        "integrated_energy_j": power if measured and all_power else None,
        "energy_diff_pct": (power / counter - 1) * 100 if measured and all_counter and all_power and counter else None,
        "mean_power_w": energy / covered if covered else None,
        "integrated_from": " and ".join(sorted(fields)) or None,
        "max_power_w": max((g["power_w"] for g in inside if g.get("power_w") is not None), default=None),
        "mean_sm_clock_mhz": _mean(g.get("sm_clock_mhz") for g in inside),
        "mean_util_gpu_pct": _mean(g.get("util_gpu_pct") for g in inside),
        "max_temp_c": max((g["temp_c"] for g in inside if g.get("temp_c") is not None), default=None),
        "max_mem_used_mib": max((g["mem_used_mib"] for g in inside if g.get("mem_used_mib") is not None), default=None),
        "throttled_share": sum(1 for m in masks if m & THROTTLING) / len(masks) if masks else None,
        "clock_event_reasons": {k: round(v, 4) for k, v in reasons.items() if v},
        "samples": len(inside),
        "coverage": covered / (end - start) if end > start else None,
        "sample_gaps": gaps,
        "max_sample_gap_s": max_gap,
        "counter_resets": resets,
        "errors": len(errors),
        "last_t": good[-1][0] if good else None,
    }


def _sum(blocks: list[dict], key: str):
    vals = [b[key] for b in blocks]
    return sum(vals) if vals and None not in vals else None


def summarise(lines: list[dict], start: float, end: float, output_tokens: int, total_tokens: int) -> dict:
    """The summary's GPU keys over the window [start, end]; {} when gpu.jsonl has no samples."""
    devices, by_gpu = series(lines)
    if not any(by_gpu.values()) or end <= start:
        return {}
    interval = devices.get("interval_s") or _interval(by_gpu)
    names = {g.get("index"): g.get("name") for g in devices.get("gpus") or []}
    blocks = [{"index": i, "name": names.get(i), **one_gpu(s, start, end, interval)} for i, s in sorted(by_gpu.items())]
    # Lost: it answered with an error, or its samples stopped while another GPU's went on (when
    # all stop together, the sampler stopped: the coverage note says so).
    lasts = [b["last_t"] for b in blocks if b["last_t"] is not None]
    still = max(lasts, default=start) >= end - GAP_INTERVALS * interval
    for b in blocks:
        stopped = b["last_t"] is None or b["last_t"] < end - GAP_INTERVALS * interval
        b["lost"] = bool(b.pop("errors")) or (stopped and still)
        del b["last_t"]
    measured = [b["energy_j"] for b in blocks if b["energy_j"] is not None]
    energy = sum(measured) if measured else None
    sources = {b["energy_source"] for b in blocks if b["energy_source"]}
    counter, integrated = _sum(blocks, "counter_energy_j"), _sum(blocks, "integrated_energy_j")
    power = sum(b["mean_power_w"] or 0.0 for b in blocks) if energy is not None else None
    masks = [(b["throttled_share"], b["samples"]) for b in blocks if b["throttled_share"] is not None]
    seen = sum(n for _, n in masks)
    reasons: dict[str, float] = {}
    for b in blocks:
        for name, share in b["clock_event_reasons"].items():
            bit = next(k for k, v in REASONS.items() if v == name)
            if bit & THROTTLING:
                reasons[name] = reasons.get(name, 0.0) + share * b["samples"] / seen
    duration = end - start
    out = {
        "gpu_telemetry_count": len(blocks),
        "gpu_energy_j": energy,
        "gpu_energy_source": sources.pop() if len(sources) == 1 else ("mixed" if sources else None),
        "gpu_energy_counter_j": counter,
        "gpu_energy_integrated_j": integrated,
        "gpu_energy_diff_pct": (integrated / counter - 1) * 100 if counter and integrated is not None else None,
        "mean_gpu_power_w": power,
        "joules_per_output_token": energy / output_tokens if energy is not None and output_tokens else None,
        "joules_per_total_token": energy / total_tokens if energy is not None and total_tokens else None,
        "output_tokens_per_joule": output_tokens / energy if energy else None,
        "output_tok_per_s_per_kw": output_tokens / duration / (power / 1000) if power else None,
        "gpu_throttled_share": sum(s * n for s, n in masks) / seen if seen else None,
        "gpu_throttle_reasons": {k: round(v, 4) for k, v in reasons.items()},
        "gpu_window_coverage": min((b["coverage"] or 0.0) for b in blocks),
        "gpu_sample_gaps": sum(b["sample_gaps"] for b in blocks),
        "gpu_max_sample_gap_s": max(b["max_sample_gap_s"] for b in blocks),
        "gpu_lost": [b["index"] for b in blocks if b["lost"]],
        "gpu_energy_counter_resets": sum(b["counter_resets"] for b in blocks),
        "gpu_mean_sm_clock_mhz": _mean(b["mean_sm_clock_mhz"] for b in blocks),
        "gpu_mean_util_pct": _mean(b["mean_util_gpu_pct"] for b in blocks),
        "gpu_max_temp_c": max((b["max_temp_c"] for b in blocks if b["max_temp_c"] is not None), default=None),
        "gpu_energy": blocks,
    }
    out["gpu_notes"] = notes(out, interval)
    return out


def _interval(by_gpu: dict) -> float:
    """The median spacing of one GPU's samples, for a gpu.jsonl without its devices line."""
    gaps = [b[0] - a[0] for s in by_gpu.values() for a, b in zip(s, s[1:]) if b[0] > a[0]]
    return median(gaps) if gaps else 0.1


def notes(s: dict, interval: float) -> list[str]:
    """One sentence per thing that makes the energy figures less than whole."""
    out = []
    if s["gpu_lost"]:
        out.append(
            f"GPU {', '.join(map(str, s['gpu_lost']))} stopped answering during the run: energy and power cover "
            "only the time it was sampled, so the totals are low"
        )
    if s["gpu_window_coverage"] < 0.99 and not s["gpu_lost"]:
        out.append(f"GPU samples cover {100 * s['gpu_window_coverage']:.0f} % of the measured window; energy is low")
    if s["gpu_sample_gaps"]:
        out.append(
            f"{s['gpu_sample_gaps']} gaps in GPU sampling longer than {GAP_INTERVALS} intervals of {interval:g} s "
            f"(longest {s['gpu_max_sample_gap_s']:.2f} s); energy there comes from the ends of each gap"
        )
    if s["gpu_energy_counter_resets"]:
        out.append(
            f"the GPU energy counter went down {s['gpu_energy_counter_resets']} times (reset or wrap-around); "
            "those intervals use integrated power"
        )
    return out


def for_run(path: Path, records: list, summary: dict, t0: float) -> dict:
    """The summary's GPU keys of a run from its gpu.jsonl, over its measured window; {} without one.
    `t0` is the manifest's clock origin: records are stamped from it, GPU samples in raw perf_counter."""
    span = metrics.window(records)
    if span is None or not path.is_file():
        return {}
    out_tokens = summary.get("total_output_tokens") or 0
    total = out_tokens + (summary.get("total_input_tokens") or 0)
    return summarise(read_lines(path), t0 + span[0], t0 + span[1], out_tokens, total)
