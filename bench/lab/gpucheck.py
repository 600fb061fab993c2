"""`just gpu-check`'s Python side: a warm-up request, the GPUs' idle power, and the table of the runs.

    python -m bench.lab.gpucheck warmup --base-url URL          # one request, its time on stderr
    python -m bench.lab.gpucheck idle DIR [--seconds 5]          # DIR/idle.json: mean power per GPU, no load
    python -m bench.lab.gpucheck table DIR                       # the table of DIR's run folders

The table reads only the run folders' summary.json and manifest.json (and idle.json): throughput,
TTFT and TPOT, mean GPU power against idle, joules per output token, throttling, the energy
counter and integrated power side by side with their difference, and the sampler's own CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.request
from pathlib import Path

from bench.errors import UserError
from bench.instrument import gpu, probe

COLUMNS = [
    ("Load", lambda s, m, idle: f"c{(m.get('load') or {}).get('concurrency')}"),
    ("Req", lambda s, m, idle: s.get("completed")),
    ("Out tok/s", lambda s, m, idle: s.get("output_throughput")),
    ("TTFT p50 ms", lambda s, m, idle: s.get("median_ttft_ms")),
    ("TPOT p50 ms", lambda s, m, idle: s.get("median_tpot_ms")),
    ("GPU W mean", lambda s, m, idle: s.get("mean_gpu_power_w")),
    ("Idle W", lambda s, m, idle: idle),
    ("J/out tok", lambda s, m, idle: s.get("joules_per_output_token")),
    ("Util %", lambda s, m, idle: s.get("gpu_mean_util_pct")),
    ("SM MHz", lambda s, m, idle: s.get("gpu_mean_sm_clock_mhz")),
    ("Throttled", lambda s, m, idle: _throttling(s)),
    ("Counter J", lambda s, m, idle: s.get("gpu_energy_counter_j")),
    ("Integrated J", lambda s, m, idle: s.get("gpu_energy_integrated_j")),
    ("Diff %", lambda s, m, idle: s.get("gpu_energy_diff_pct")),
    ("Sampler CPU %", lambda s, m, idle: (s.get("gpu_sampler") or {}).get("cpu_percent")),
]


def _throttling(s: dict) -> str | None:
    if s.get("gpu_throttled_share") is None:
        return None
    reasons = s.get("gpu_throttle_reasons") or {}
    return ", ".join(f"{k} {100 * v:.0f}%" for k, v in reasons.items()) or "none"


def _cell(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.3f}" if abs(v) < 10 else f"{v:,.1f}"
    return str(v)


def runs(folder: Path) -> list[tuple[dict, dict]]:
    """(summary, manifest) of every run folder directly under `folder`, by concurrency."""
    out = []
    for d in sorted(p for p in folder.iterdir() if (p / "summary.json").is_file() and (p / "manifest.json").is_file()):
        out.append((json.loads((d / "summary.json").read_text()), json.loads((d / "manifest.json").read_text())))
    return sorted(out, key=lambda sm: (sm[1].get("load") or {}).get("concurrency") or 0)


def table(folder: Path) -> str:
    from tabulate import tabulate

    found = runs(folder) if folder.is_dir() else []
    if not found:
        raise UserError(f"no run folders under {folder}; run `just gpu-check` first")
    idle_file = folder / "idle.json"
    idle = json.loads(idle_file.read_text()).get("total_power_w") if idle_file.is_file() else None
    body = [[_cell(get(s, m, idle)) for _, get in COLUMNS] for s, m in found]
    telemetry = found[0][1].get("gpu_telemetry") or {}
    names = ", ".join(f"{g.get('index')}: {g.get('name')}" for g in telemetry.get("gpus") or []) or "no GPU sampled"
    head = (
        f"GPUs ({telemetry.get('source') or 'no telemetry'}, driver {telemetry.get('driver')}): {names}; "
        f"model {(found[0][1].get('server') or {}).get('model')}; energy from {found[0][0].get('gpu_energy_source')}"
    )
    notes = [f"c{(m.get('load') or {}).get('concurrency')}: {n}" for s, m in found for n in s.get("notes") or []]
    text = head + "\n\n" + tabulate(body, headers=[c for c, _ in COLUMNS], tablefmt="github", disable_numparse=True)
    return text + "\n" + "".join(f"\nnote {n}" for n in notes) + "\n"


def idle(folder: Path, seconds: float, ids: list[int] | None) -> dict:
    """Mean power per GPU over `seconds` with no load, sampled every 0.1 s; written to folder/idle.json."""
    try:
        source = gpu.open_source(ids)
    except gpu.NoGpu as e:
        raise UserError(f"no GPU to measure idle power on ({e})") from None
    readings: dict[int, list[float]] = {}
    end = time.perf_counter() + seconds
    try:
        if isinstance(source, gpu.Nvml):
            while time.perf_counter() < end:
                for g in source.sample():
                    if g.get("power_w") is not None:
                        readings.setdefault(g["index"], []).append(g["power_w"])
                time.sleep(0.1)
        else:
            source.start(0.1)
            for t, g in source.lines():
                if g.get("power_w") is not None:
                    readings.setdefault(g["index"], []).append(g["power_w"])
                if t > end:
                    break
    finally:
        source.close()
    per_gpu = {i: sum(v) / len(v) for i, v in sorted(readings.items())}
    out = {"seconds": seconds, "source": source.name, "power_w": per_gpu, "total_power_w": sum(per_gpu.values())}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "idle.json").write_text(json.dumps(out, indent=2) + "\n")
    return out


def warmup(base_url: str) -> float:
    """One short completion, so the first measured request does not pay for the server's first one."""
    info = probe.discover(base_url, None, None)
    body = json.dumps({"model": info.model, "prompt": "Warm up " * 32, "max_tokens": 32, "temperature": 0.0})
    req = urllib.request.Request(
        f"{base_url.rstrip('/')}/completions", body.encode(), {"Content-Type": "application/json"}
    )
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=600) as answer:
            answer.read()
    except OSError as e:  # URLError, HTTPError, a timeout
        raise UserError(f"the warm-up request to {base_url} failed ({e}); is the server up?") from None
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.lab.gpucheck", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    w = sub.add_parser("warmup", help="Send one short request and wait for its answer.")
    w.add_argument("--base-url", required=True, help="The server's OpenAI base URL, e.g. http://127.0.0.1:8001/v1.")
    i = sub.add_parser("idle", help="Measure the GPUs' mean power with no load into DIR/idle.json.")
    i.add_argument("dir", type=Path, help="The gpu-check's folder.")
    i.add_argument("--seconds", type=float, default=5.0, help="How long to sample.")
    i.add_argument("--gpu-ids", help="GPU indices, comma-separated (default: all).")
    t = sub.add_parser("table", help="Print the table of the run folders under DIR.")
    t.add_argument("dir", type=Path, help="The gpu-check's folder.")
    args = p.parse_args(argv)
    try:
        if args.what == "warmup":
            print(f"warm-up request answered in {warmup(args.base_url):.1f} s", file=sys.stderr)
        elif args.what == "idle":
            ids = [int(x) for x in args.gpu_ids.split(",")] if args.gpu_ids else None
            got = idle(args.dir, args.seconds, ids)
            print(
                f"idle power: {got['total_power_w']:.1f} W over {args.seconds:g} s ({got['source']})", file=sys.stderr
            )
        else:
            print(table(args.dir))
    except UserError as e:
        print(f"{p.prog}: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
