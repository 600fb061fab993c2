"""Where a run goes and what its manifest says: the run folder (never one that holds results) and
the server, workload and load it was measured with."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from bench import paths
from bench.errors import UserError
from bench.instrument import manifest, probe
from bench.instrument import session_trace_workload as more
from bench.instrument.gpu_sampler import read_lines
from bench.instrument.spec import RunSpec


def run_folder(spec: RunSpec, label: str) -> Path:
    load = more.load_point(spec)
    out = spec.out or paths.RESULTS / "runs" / f"{datetime.now():%Y%m%d-%H%M%S}-{label}-{load}"
    if out.exists() and any(out.iterdir()):
        raise UserError(f"run folder {out} already holds results; choose another --out (nothing is overwritten)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the run folder {out}: {e.strerror}; choose another --out") from None
    return out


def run_manifest(spec: RunSpec, info: probe.ServerInfo, server: dict, label: str, t0: float) -> dict:
    man = manifest.build(
        spec.argv,
        t0,
        server={
            "base_url": manifest.redact_text(spec.base_url),
            "model": info.model,
            "model_given": info.model_given,
            "version": info.version,
            "system_fingerprint": info.system_fingerprint,
            "engine": server.get("engine"),
            "label": label,
            "serve_command": manifest.redact_text(server.get("command") or "") or None,
        },
        api=spec.api,
        transport=spec.transport,
        workload={
            "name": spec.dataset,
            "dataset": spec.dataset_path,
            "input_len": spec.input_len,
            "output_len": spec.output_len,
            "range_ratio": spec.range_ratio,
            "prefix_len": spec.prefix_len,
            "num_prompts": spec.num_prompts,
            "seed": spec.seed,
            "ignore_eos": spec.ignore_eos,
            "extra_body": spec.extra_body,
        },
        load={
            "concurrency": spec.concurrency,
            "rate": spec.rate,
            "burstiness": spec.burstiness,
            "ramp_up": spec.ramp_up,
            "warmup": spec.warmup,
            "duration": spec.duration,
            "min_success": spec.min_success,
            **({"time_scale": spec.time_scale} if spec.dataset in more.traces.FORMATS else {}),
            "until_steady": {
                "ci_target": spec.ci_target,
                "min_requests": spec.min_requests,
                "max_requests": spec.max_requests,
            }
            if spec.until_steady
            else None,
        },
    )
    man["gpu_count"] = spec.gpus or server.get("gpus") or man["gpu_count"]
    if spec.campaign or spec.scenario:
        man["campaign"] = {
            "name": spec.campaign,
            "scenario": spec.scenario,
            "load_point": more.load_point(spec),
        }
    return man


def gpu_devices(path: Path, message: str | None) -> dict:
    """The sampler's devices line (source, driver, names, power limits, max clocks), else why none."""
    devices = next((x for x in read_lines(path) if x.get("kind") == "devices"), None) if path.is_file() else None
    if devices is None:
        return {"source": None, "info": message}
    return {k: v for k, v in devices.items() if k not in ("kind", "t")}
