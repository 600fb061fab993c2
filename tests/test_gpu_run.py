"""GPU telemetry through `bench run`, `bench summarize`, `bench report` and `bench plot`, against the
calibration server: the no-GPU path, the sampler process end to end (fed by a recorded nvidia-smi),
and the tables and plots of a run folder that holds a recorded gpu.jsonl."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bench.cli import main
from bench.instrument import energy
from bench.instrument.gpu_sampler import nvidia_present, read_lines
from bench.instrument.records import read_records
from bench.lab import gpucheck
from bench.lab.calibration import start_server, stop_server
from bench.results.gpu_timeline import gpu_timeline_series
from conftest import ROOT, TOKENIZER

DATA = ROOT / "tests" / "data" / "gpu"
GPU_KEYS = ("gpu_energy_j", "joules_per_output_token", "mean_gpu_power_w", "gpu_sampler", "gpu_telemetry_count")


@pytest.fixture
def calibration(tmp_path):
    proc = start_server(0, log=tmp_path / "calib.jsonl", ttft_ms=20, itl_ms=5)
    yield f"{proc.base_url}/v1"
    stop_server(proc)


def bench_run(url: str, out: Path, *extra: str) -> int:
    argv = ["run", "--base-url", url, "--tokenizer", TOKENIZER, "--out", str(out), "--no-progress"]
    return main([*argv, "--concurrency", "4", "--num-prompts", "16", "--input-len", "32", "--output-len", "24", *extra])


@pytest.mark.skipif(nvidia_present(), reason="this host has an NVIDIA GPU: the no-GPU path cannot be taken")
def test_without_a_gpu_one_info_line_and_no_gpu_keys(calibration, tmp_path, capsys):
    out = tmp_path / "run"
    assert bench_run(calibration, out) == 0
    err = capsys.readouterr().err
    said = [line for line in err.splitlines() if "GPU" in line]
    assert said == ["info: no NVIDIA GPU visible (no NVML library, no nvidia-smi); no GPU telemetry"]
    assert not (out / "gpu.jsonl").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert not [k for k in summary if k in GPU_KEYS or k.startswith("gpu_")]
    assert summary["completed"] == 16
    telemetry = json.loads((out / "manifest.json").read_text())["gpu_telemetry"]
    assert telemetry == {"source": None, "info": said[0].removeprefix("info: ")}


def test_gpu_ids_none_says_nothing_and_samples_nothing(calibration, tmp_path, capsys):
    out = tmp_path / "run"
    assert bench_run(calibration, out, "--gpu-ids", "none") == 0
    assert "GPU" not in capsys.readouterr().err
    assert not (out / "gpu.jsonl").exists()
    assert "gpu_energy_j" not in json.loads((out / "summary.json").read_text())


def test_bad_gpu_ids_get_one_sentence(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["run", "--concurrency", "1", "--gpu-ids", "0,x"])
    assert exited.value.code == 2
    assert "argument --gpu-ids: '0,x' is not all, none or GPU indices such as 0,1" in capsys.readouterr().err


@pytest.mark.skipif(
    nvidia_present(), reason="this host has an NVIDIA GPU: the sampler would read it, not the recording"
)
def test_the_sampler_process_end_to_end_on_a_recorded_nvidia_smi(calibration, tmp_path, monkeypatch, capsys):
    # The recorded nvidia-smi (tests/data/gpu/smi) replays two H200s' lines at the -lms interval.
    monkeypatch.setenv("PATH", f"{DATA / 'smi'}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "run"
    assert bench_run(calibration, out, "--gpu-interval", "0.05", "--gpu-ids", "0,1") == 0
    lines = read_lines(out / "gpu.jsonl")
    devices, samples = lines[0], [x for x in lines if x["kind"] == "sample"]
    assert devices["kind"] == "devices" and devices["source"] == "nvidia-smi" and devices["driver"] == "570.133.20"
    assert [g["name"] for g in devices["gpus"]] == ["NVIDIA H200"] * 2 and devices["gpus"][1]["power_limit_w"] == 700
    assert {s["gpus"][0]["index"] for s in samples} == {0, 1} and {s["phase"] for s in samples} >= {"measure"}
    assert lines[-1]["kind"] == "cost" and lines[-1]["samples"] == len(samples)
    records = list(read_records(out / "requests.jsonl"))
    t0 = json.loads((out / "manifest.json").read_text())["clock"]["t0_perf_counter"]
    assert samples[0]["t"] < t0 + min(r.sent for r in records)  # sampling began before the first request
    assert samples[-1]["t"] > t0 + max(r.last for r in records)  # and ended after the last
    summary = json.loads((out / "summary.json").read_text())
    assert summary["gpu_telemetry_count"] == 2 and summary["gpu_energy_source"] == "power"  # no counter in smi
    assert summary["gpu_energy_counter_j"] is None and summary["gpu_energy_integrated_j"] == summary["gpu_energy_j"]
    assert 2 * 120 < summary["mean_gpu_power_w"] < 2 * 460  # the recording's range, two GPUs
    assert summary["joules_per_output_token"] == pytest.approx(summary["gpu_energy_j"] / summary["total_output_tokens"])
    assert summary["gpu_window_coverage"] == pytest.approx(1.0) and samples[-1]["phase"] == "after"
    # a loaded host may stall the sampler (a gap note, which is right); nothing else about the GPUs
    assert not [n for n in summary["notes"] if "GPU" in n and "gaps in GPU sampling" not in n]
    sampler = summary["gpu_sampler"]
    assert sampler["source"] == "nvidia-smi" and sampler["samples"] == len(samples) and sampler["cpu_percent"] >= 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["gpu_telemetry"]["gpus"] == devices["gpus"]
    said = capsys.readouterr()
    assert f"{summary['joules_per_output_token']:,.2f}" in next(
        line for line in said.out.splitlines() if line.startswith("Energy per output token (J)")
    )
    assert f"GPU sampler (nvidia-smi, {len(samples)} samples): " in said.err


def t0_of(run: Path) -> float:
    return json.loads((run / "manifest.json").read_text())["clock"]["t0_perf_counter"]


def shifted_recording(run: Path) -> None:
    """The power-capped two-GPU recording, moved in time so its capped part (6 s to 10 s) covers the run's window."""
    start = t0_of(run) + min(r.sent for r in read_records(run / "requests.jsonl") if not r.warmup)
    shift = start - (5000.0 + 6.2)
    text = []
    for x in read_lines(DATA / "capped-2gpu.jsonl"):
        if "t" in x:
            x["t"] += shift
        text.append(json.dumps(x))
    (run / "gpu.jsonl").write_text("\n".join(text) + "\n")


def test_report_and_plot_show_energy_from_a_run_folder_with_gpu_jsonl(calibration, tmp_path, capsys):
    tree = tmp_path / "results"
    run = tree / "camp" / "calib" / "32-24" / "c4"
    assert bench_run(calibration, run, "--gpu-ids", "none") == 0
    shifted_recording(run)
    assert main(["summarize", str(run), "--force"]) == 0  # the summary again, now with gpu.jsonl
    summary = json.loads((run / "summary.json").read_text())
    expected = energy.for_run(run / "gpu.jsonl", list(read_records(run / "requests.jsonl")), summary, t0_of(run))
    assert summary["gpu_energy_j"] == pytest.approx(expected["gpu_energy_j"]) and summary["gpu_energy_j"] > 0
    assert 2 * 420 < summary["mean_gpu_power_w"] < 2 * 460  # all inside the recording's loaded part
    capsys.readouterr()

    assert main(["report", str(tree)]) == 0
    table = capsys.readouterr().out
    assert "J/out tok" in table and "GPU W mean" in table and "Throttled" in table
    assert f"{summary['joules_per_output_token']:,.2f}" in table
    assert summary["gpu_throttle_reasons"] == {"sw_power_cap": 1.0}
    assert "GPU throttling seen" in table and "c4: sw_power_cap 100 % of samples" in table

    assert main(["plot", str(tree)]) == 0
    assert (run / "gpu-timeline.png").stat().st_size > 10_000
    assert (tree / "camp" / "32-24-frontier.png").is_file()
    s = gpu_timeline_series(read_lines(run / "gpu.jsonl"), list(read_records(run / "requests.jsonl")), t0_of(run))
    assert sorted(s["gpus"]) == [0, 1] and len(s["gpus"][0]["power_w"]) == 201
    measured = [r for r in read_records(run / "requests.jsonl") if not r.warmup]
    assert sum(s["rate"]) == sum(sum(r.chunk_tokens or [1] * len(r.chunk_times)) for r in measured)
    lo, hi = s["window"]
    assert 0 < lo < hi

    # just gpu-check's table over the same folder, with an idle reading beside the runs
    (run.parent / "idle.json").write_text(json.dumps({"total_power_w": 259.25}))
    assert gpucheck.main(["table", str(run.parent)]) == 0
    text = capsys.readouterr().out
    row = next(line for line in text.splitlines() if line.startswith("| c4"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[6] == "259.2" and cells[7] == f"{summary['joules_per_output_token']:,.3f}"
    assert cells[11] == f"{summary['gpu_energy_counter_j']:,.1f}" and cells[10] == "sw_power_cap 100%"
    assert text.startswith("GPUs (no telemetry")  # measured with --gpu-ids none: the manifest says so


def test_gpu_check_warm_up_request_and_its_refusals(calibration, tmp_path, capsys):
    assert gpucheck.main(["warmup", "--base-url", calibration]) == 0
    assert capsys.readouterr().err.startswith("warm-up request answered in ")
    assert gpucheck.main(["table", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert (
        err == f"python -m bench.lab.gpucheck: no run folders under {tmp_path / 'none'}; run `just gpu-check` first\n"
    )
