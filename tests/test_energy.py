"""GPU energy over the measured window, on recorded samples (tests/data/gpu, written by its make_samples.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench.instrument import energy, gpu

DATA = Path(__file__).parent / "data" / "gpu"
T0 = 5000.0  # the recordings' first sample time
WINDOW = (T0 + 2.0, T0 + 18.0)  # the load in every recording
OUT_TOKENS, ALL_TOKENS = 10_000, 30_000


def lines(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines()]


def summary(name: str, window=WINDOW) -> dict:
    return energy.summarise(lines(name), *window, OUT_TOKENS, ALL_TOKENS)


def true_energy(gpu_index: int, start: float = 2.0, end: float = 18.0) -> float:
    """The recordings' power curve (make_samples.true_power, written out again) integrated finely."""
    lo, hi = 128.0 + 3 * gpu_index, 430.0 + 10 * gpu_index
    step, total, t = 0.0005, 0.0, start
    while t < end:
        m = t + step / 2
        up = min(1.0, max(0.0, (m - 2.0) / 0.5)) * min(1.0, max(0.0, (18.5 - m) / 0.5))
        total += (lo + (hi - lo) * up + 15 * up * math.sin(2 * math.pi * m / 3.7 + gpu_index)) * step
        t += step
    return total


def test_counter_and_integrated_power_agree_with_the_true_energy():
    s = summary("steady-2gpu.jsonl")
    truth = true_energy(0) + true_energy(1)
    assert s["gpu_energy_source"] == "counter" and s["gpu_telemetry_count"] == 2
    assert s["gpu_energy_j"] == s["gpu_energy_counter_j"]
    assert s["gpu_energy_counter_j"] == pytest.approx(truth, rel=1e-3)
    assert s["gpu_energy_integrated_j"] == pytest.approx(truth, rel=5e-3)
    diff = (s["gpu_energy_integrated_j"] / s["gpu_energy_counter_j"] - 1) * 100
    assert s["gpu_energy_diff_pct"] == pytest.approx(diff) and abs(diff) < 0.5
    assert [b["index"] for b in s["gpu_energy"]] == [0, 1]
    assert s["gpu_energy"][0]["counter_energy_j"] == pytest.approx(true_energy(0), rel=1e-3)


def sparse_counter(name: str, every: int, offset: int) -> list[dict]:
    """The recording with the energy counter kept in one sample of `every` only, as the sampler reads it."""
    out, n = [], 0
    for line in lines(name):
        if line.get("kind") == "sample":
            if n % every != offset:
                for g in line["gpus"]:
                    g["energy_j"] = None
            n += 1
        out.append(line)
    return out


@pytest.mark.parametrize("offset,rel", [(0, 1e-3), (3, 1e-2)])
def test_a_counter_read_once_a_second_still_gives_the_energy(offset, rel):
    # offset 0: reads on the window's edges (the sampler reads at each phase change); 3: edges between reads
    s = energy.summarise(sparse_counter("steady-2gpu.jsonl", 10, offset), *WINDOW, OUT_TOKENS, ALL_TOKENS)
    truth = true_energy(0) + true_energy(1)
    assert s["gpu_energy_source"] == "counter" and s["gpu_energy_j"] == s["gpu_energy_counter_j"]
    assert s["gpu_energy_counter_j"] == pytest.approx(truth, rel=rel)
    assert s["gpu_energy_integrated_j"] == pytest.approx(summary("steady-2gpu.jsonl")["gpu_energy_integrated_j"])


def test_instantaneous_power_integrates_closer_than_the_drivers_1s_average():
    recorded = lines("steady-2gpu.jsonl")
    averaged = json.loads(json.dumps(recorded))
    for line in averaged:
        for g in line.get("gpus") or []:
            if line["kind"] == "sample":
                g["power_instant_w"] = None
    instant = energy.summarise(recorded, *WINDOW, OUT_TOKENS, ALL_TOKENS)
    average = energy.summarise(averaged, *WINDOW, OUT_TOKENS, ALL_TOKENS)
    assert {b["integrated_from"] for b in instant["gpu_energy"]} == {"power_instant_w"}
    assert {b["integrated_from"] for b in average["gpu_energy"]} == {"power_w"}
    assert abs(instant["gpu_energy_diff_pct"]) < 0.1 < abs(average["gpu_energy_diff_pct"]) < 5
    assert instant["gpu_energy_counter_j"] == average["gpu_energy_counter_j"]  # the counter is the reference


def test_per_token_and_power_keys_follow_from_the_energy():
    s = summary("steady-2gpu.jsonl")
    e, seconds = s["gpu_energy_j"], WINDOW[1] - WINDOW[0]
    assert s["joules_per_output_token"] == pytest.approx(e / OUT_TOKENS)
    assert s["joules_per_total_token"] == pytest.approx(e / ALL_TOKENS)
    assert s["output_tokens_per_joule"] == pytest.approx(OUT_TOKENS / e)
    assert s["mean_gpu_power_w"] == pytest.approx(e / seconds, rel=1e-3)  # both GPUs together
    assert 850 < s["mean_gpu_power_w"] < 875  # ~430 W and ~440 W loaded, the ramps at the edges
    assert s["output_tok_per_s_per_kw"] == pytest.approx(OUT_TOKENS / seconds / (s["mean_gpu_power_w"] / 1000))
    assert s["gpu_mean_sm_clock_mhz"] == 1980 and s["gpu_max_temp_c"] == 55
    assert s["gpu_notes"] == [] and s["gpu_lost"] == [] and s["gpu_window_coverage"] == pytest.approx(1.0)


def test_idle_time_outside_the_window_does_not_count():
    whole = summary("steady-2gpu.jsonl", (T0, T0 + 20.0))
    part = summary("steady-2gpu.jsonl")
    idle = whole["gpu_energy_j"] - part["gpu_energy_j"]
    # 4 s outside the window at ~130 W per GPU (plus the ends of the ramps)
    assert 2 * 4 * 128 < idle < 2 * 4 * 160


def test_a_counter_that_goes_down_uses_integrated_power_for_that_interval():
    s = summary("wrap-2gpu.jsonl")
    assert s["gpu_energy_counter_resets"] == 1
    assert s["gpu_energy"][1]["energy_source"] == "mixed" and s["gpu_energy"][0]["energy_source"] == "counter"
    assert s["gpu_energy_source"] == "mixed"
    assert s["gpu_energy_counter_j"] is None  # GPU 1's counter is not whole over the window
    assert s["gpu_energy_j"] == pytest.approx(true_energy(0) + true_energy(1), rel=2e-3)
    assert any("went down 1 times" in n for n in s["gpu_notes"])


def test_missing_fields_fall_back_and_say_which():
    s = summary("missing-2gpu.jsonl")
    no_counter, spotty_power = s["gpu_energy"]
    assert no_counter["energy_source"] == "power" and no_counter["counter_energy_j"] is None
    # only the 1 s average to integrate: it lags the ramp into the window, so it reads ~2 % low
    assert no_counter["integrated_from"] == "power_w"
    assert 0.97 * true_energy(0) < no_counter["integrated_energy_j"] < true_energy(0)
    assert no_counter["max_temp_c"] is None and no_counter["throttled_share"] is None
    assert spotty_power["energy_source"] == "counter" and spotty_power["integrated_energy_j"] is None
    assert s["gpu_energy_integrated_j"] is None and s["gpu_energy_diff_pct"] is None
    assert s["gpu_energy_j"] == pytest.approx(true_energy(0) + true_energy(1), rel=2e-2)


def test_a_gpu_that_disappears_is_flagged_and_the_others_kept():
    s = summary("lost-4gpu.jsonl")
    assert s["gpu_lost"] == [2] and s["gpu_telemetry_count"] == 4
    blocks = {b["index"]: b for b in s["gpu_energy"]}
    assert blocks[2]["lost"] and blocks[2]["coverage"] == pytest.approx(10 / 16, abs=0.01)  # lost at 12 s
    assert blocks[2]["energy_j"] == pytest.approx(true_energy(2, 2.0, 12.0), rel=0.01)
    for i in (0, 1, 3):
        assert not blocks[i]["lost"] and blocks[i]["energy_j"] == pytest.approx(true_energy(i), rel=1e-3)
    assert s["gpu_window_coverage"] == pytest.approx(10 / 16, abs=0.01)
    assert any("GPU 2 stopped answering" in n for n in s["gpu_notes"])


def test_a_gap_in_sampling_is_counted_and_bridged_by_the_counter():
    s = summary("gap-1gpu.jsonl")
    assert s["gpu_sample_gaps"] == 1 and 2.0 <= s["gpu_max_sample_gap_s"] < 2.2
    assert s["gpu_energy_counter_j"] == pytest.approx(true_energy(0), rel=1e-3)  # the counter spans the gap
    assert s["gpu_energy_integrated_j"] != pytest.approx(s["gpu_energy_counter_j"], rel=1e-3)  # power cannot
    assert any("1 gaps in GPU sampling" in n for n in s["gpu_notes"])


def test_throttling_is_named_with_its_share_of_the_window():
    s = summary("capped-2gpu.jsonl")
    assert s["gpu_throttle_reasons"] == {"sw_power_cap": pytest.approx(4 / 16, abs=0.02)}
    assert s["gpu_throttled_share"] == pytest.approx(4 / 16, abs=0.02)
    # outside the window the GPUs were idle: gpu_idle is a clock event reason, not throttling
    whole = summary("capped-2gpu.jsonl", (T0, T0 + 20.0))
    assert (
        "gpu_idle" in whole["gpu_energy"][0]["clock_event_reasons"] and "gpu_idle" not in whole["gpu_throttle_reasons"]
    )


def test_no_samples_means_no_gpu_keys():
    devices_only = lines("steady-2gpu.jsonl")[:1]
    assert energy.summarise(devices_only, *WINDOW, OUT_TOKENS, ALL_TOKENS) == {}


def test_nvidia_smi_lines_read_as_samples():
    row = "3, 412.57, 1980, 3201, 97, 41, 120034, 57, 0x0000000000000004"
    got = gpu.parse_smi_line(row)
    assert got == {
        "index": 3,
        "power_w": 412.57,
        "power_instant_w": None,
        "energy_j": None,
        "sm_clock_mhz": 1980,
        "mem_clock_mhz": 3201,
        "util_gpu_pct": 97,
        "util_mem_pct": 41,
        "mem_used_mib": 120034,
        "temp_c": 57,
        "throttle": 4,
    }
    assert gpu.reason_names(got["throttle"]) == ["sw_power_cap"]
    partial = gpu.parse_smi_line("1, [N/A], 1980, 3201, 97, 41, 120034, [N/A], [N/A]")
    assert partial["power_w"] is None and partial["temp_c"] is None and partial["sm_clock_mhz"] == 1980
    lost = gpu.parse_smi_line(
        "2, [GPU is lost], [GPU is lost], [GPU is lost], [GPU is lost], [GPU is lost], "
        "[GPU is lost], [GPU is lost], [GPU is lost]"
    )
    assert lost == {"index": 2, "error": "[GPU is lost], [GPU is lost]"}
    assert gpu.parse_smi_line("index, power.draw [W]") is None


def test_every_nvml_name_the_sampler_calls_exists_in_the_installed_binding():
    # No GPU here: this at least holds the NVML reader to nvidia-ml-py's real names (a typo would only
    # show on a GPU machine, as a field that is always None).
    import re

    import pynvml

    source = (Path(gpu.__file__)).read_text()
    names = set(re.findall(r"\b(?:nv|pynvml|self\.nv)\.(nvml\w+|NVML\w+)", source))
    assert len(names) > 20
    assert [n for n in sorted(names) if not hasattr(pynvml, n)] == []
