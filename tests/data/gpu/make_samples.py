"""Writes the recorded GPU samples the telemetry tests read (gpu.jsonl, as bench.instrument.gpu_sampler writes it).

    python tests/data/gpu/make_samples.py      # rewrites tests/data/gpu/*.jsonl; same seed, same files

H200-like boards: ~130 W idle, rising to ~450 W under load, the energy counter the exact integral of
the true power (drawn every millisecond) plus the driver's starting count; at each sample the
instantaneous power and, as NVML's power usage on recent GPUs, its mean over the last second.
Load runs from 2 s to 18 s of a 20 s recording; the tests use that as the measured window.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

HERE = Path(__file__).parent
T0 = 5000.0  # the recording's first perf_counter value
LOAD = (2.0, 18.0)


def true_power(t: float, gpu: int) -> float:
    """Idle, a 0.5 s ramp, a loaded plateau with a slow wobble, and the fall back."""
    lo, hi = 128.0 + 3 * gpu, 430.0 + 10 * gpu
    up = min(1.0, max(0.0, (t - LOAD[0]) / 0.5)) * min(1.0, max(0.0, (LOAD[1] + 0.5 - t) / 0.5))
    return lo + (hi - lo) * up + 15 * up * math.sin(2 * math.pi * t / 3.7 + gpu)


def average_power(t: float, gpu: int) -> float:
    """NVML's power usage on recent GPUs: the mean over the last second."""
    return sum(true_power(t - (k + 0.5) / 50, gpu) for k in range(50)) / 50


def device(i: int) -> dict:
    return {
        "index": i,
        "name": "NVIDIA H200",
        "uuid": f"GPU-0000000{i}-1111-2222-3333-444444444444",
        "power_limit_w": 700.0,
        "default_power_limit_w": 700.0,
        "max_sm_clock_mhz": 1980,
        "max_mem_clock_mhz": 3201,
        "memory_total_mib": 143771,
    }


def record(gpus: int, seconds: float = 20.0, interval: float = 0.1, seed: int = 0, edit=None) -> list[dict]:
    rng = random.Random(seed)
    lines = [
        {
            "kind": "devices",
            "t": T0 - 0.2,
            "interval_s": interval,
            "source": "nvml",
            "driver": "570.133.20",
            "gpus": [device(i) for i in range(gpus)],
        }
    ]
    counter = [1.0e6 * (i + 1) + rng.uniform(0, 1e5) for i in range(gpus)]  # J since the driver loaded
    t_true, step, k = 0.0, 0.001, 0
    while k * interval <= seconds:
        t = k * interval + rng.uniform(-0.002, 0.002)  # the loop's jitter
        while t_true < t:
            for i in range(gpus):
                counter[i] += true_power(t_true + step / 2, i) * step
            t_true += step
        samples = []
        for i in range(gpus):
            loaded = LOAD[0] <= t <= LOAD[1]
            samples.append(
                {
                    "index": i,
                    "power_w": round(average_power(t, i), 3),
                    "power_instant_w": round(true_power(t, i), 3),
                    "energy_j": round(counter[i], 3),  # NVML's mJ / 1000
                    "sm_clock_mhz": 1980 if loaded else 345,
                    "mem_clock_mhz": 3201,
                    "util_gpu_pct": rng.randint(85, 100) if loaded else 0,
                    "util_mem_pct": rng.randint(30, 60) if loaded else 0,
                    "mem_used_mib": 120000 + i,
                    "temp_c": 34 + (20 if loaded else 0) + i,
                    "throttle": 0x0 if loaded else 0x1,
                }
            )
        phase = "measure" if t >= LOAD[0] - 0.05 else "warmup"
        line = {"kind": "sample", "t": round(T0 + t, 6), "phase": phase, "gpus": samples}
        if edit is None or edit(k, t, line) is not False:
            lines.append(line)
        k += 1
    lines.append(
        {
            "kind": "cost",
            "samples": k,
            "interval_s": interval,
            "cpu_s": 0.41,
            "loop_cpu_s": 0.12,
            "loop_wall_s": seconds,
            "children_cpu_s": 0.0,
            "cpu_percent": 0.6,
        }
    )
    return lines


def wrap(k, t, line):
    """GPU 1's counter restarts from zero at 10 s (a driver reload, or the counter's wrap-around)."""
    if t >= 10.0:
        g = line["gpus"][1]
        g["energy_j"] = round(g["energy_j"] - 1.9e6, 3)


def missing(k, t, line):
    """GPU 0 has no energy counter nor instantaneous power (an older board), nor temperature; GPU 1 misses its
    power readings now and then."""
    line["gpus"][0].update(energy_j=None, power_instant_w=None, temp_c=None, throttle=None)
    if k % 7 == 3:
        line["gpus"][1].update(power_w=None, power_instant_w=None)


def lost(k, t, line):
    """GPU 2 falls off the bus at 12 s: NVML answers 'GPU is lost' from then on."""
    if t >= 12.0:
        line["gpus"][2] = {"index": 2, "error": "GPU is lost"}


def gap(k, t, line):
    """The sampler stalls for 2 s at 8 s (a starved core)."""
    return not 8.0 <= t < 10.0


def capped(k, t, line):
    """Both GPUs hit their power cap (sw_power_cap, 0x4) from 6 s to 10 s."""
    if 6.0 <= t < 10.0:
        for g in line["gpus"]:
            g["throttle"] = 0x4


FILES = {
    "steady-2gpu.jsonl": dict(gpus=2),
    "wrap-2gpu.jsonl": dict(gpus=2, edit=wrap),
    "missing-2gpu.jsonl": dict(gpus=2, edit=missing),
    "lost-4gpu.jsonl": dict(gpus=4, edit=lost),
    "gap-1gpu.jsonl": dict(gpus=1, edit=gap),
    "capped-2gpu.jsonl": dict(gpus=2, edit=capped),
}

if __name__ == "__main__":
    for name, kw in FILES.items():
        text = "".join(json.dumps(x, separators=(",", ":")) + "\n" for x in record(seed=len(name), **kw))
        (HERE / name).write_text(text)
        print(f"wrote {HERE / name} ({len(text) // 1024} KiB)")
