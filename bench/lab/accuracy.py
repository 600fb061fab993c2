"""How far a client's numbers are from the truth: the calibration server's own log.

Error = what the client reports minus what the server logged (when it received each
request, when it really sent each chunk). Used by `bench run --self-check` (a short run
before the real one, its error bar kept in the manifest) and by `just bench-client`.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
from pathlib import Path

import numpy as np

from bench.instrument import metrics
from bench.instrument.records import read_records
from bench.paths import TINY_MODEL as TINY_TOKENIZER


def latencies_from_log(log: dict[str, dict], ids: set[str] | None = None) -> dict[str, np.ndarray]:
    """True TTFT, chunk ITL and E2EL (ms) of every request in a calibration log."""
    entries = [e for rid, e in log.items() if ids is None or rid in ids]
    return {
        "ttft": np.array([e["sent"][0] - e["received"] for e in entries]) * 1e3,
        "itl": np.array([g for e in entries for g in np.diff(e["sent"])]) * 1e3,
        "e2el": np.array([e["sent"][-1] - e["received"] for e in entries]) * 1e3,
    }


def measured_requests(log: dict[str, dict]) -> dict[str, np.ndarray]:
    """True latencies of the requests `bench run` sent (ids bench-...), not of its probes."""
    return latencies_from_log(log, {rid for rid in log if rid.startswith("bench-")})


def latencies_from_run(run_dir: Path) -> dict[str, np.ndarray]:
    """What `bench run` measured (ms), measured requests that succeeded."""
    recs = metrics.timed_requests(read_records(run_dir / "requests.jsonl"))
    return {
        "ttft": np.array([metrics.ttft(r) for r in recs]) * 1e3,
        "itl": np.array([g for r in recs for g in metrics.chunk_gaps(r)]) * 1e3,
        "e2el": np.array([metrics.e2el(r) for r in recs]) * 1e3,
    }


def latencies_from_vllm(result: dict) -> dict[str, np.ndarray]:
    """What `vllm bench serve --save-detailed` measured (ms), requests without error."""
    ok = [i for i, e in enumerate(result["errors"]) if not e]
    return {
        "ttft": np.array([result["ttfts"][i] for i in ok]) * 1e3,
        "itl": np.array([g for i in ok for g in result["itls"][i]]) * 1e3,
        "e2el": np.array([result["latencies"][i] for i in ok]) * 1e3,
    }


def errors(measured: dict[str, np.ndarray], truth: dict[str, np.ndarray]) -> dict[str, float]:
    """Client minus truth (ms) for the statistics the accuracy targets name."""
    out = {}
    for name in ("ttft", "itl", "e2el"):
        m, t = measured[name], truth[name]
        if len(m) and len(t):
            out[f"{name}_mean_error_ms"] = float(m.mean() - t.mean())
            out[f"{name}_p99_error_ms"] = float(np.percentile(m, 99) - np.percentile(t, 99))
    return out


def self_check(
    concurrency: int, api: str = "completions", output_len: int = 32, ttft_ms: float = 50.0, itl_ms: float = 20.0
) -> dict:
    """Run this client against a fresh calibration server at `concurrency`; its error bar."""
    from bench.cli import main
    from bench.lab.calibration import (
        read_log,
        send_lag_stats,
        start_server,
        stop_server,
    )

    with tempfile.TemporaryDirectory(prefix="bench-self-check-") as tmp:
        log, out = Path(tmp) / "server.jsonl", Path(tmp) / "run"
        server = start_server(0, log=log, ttft_ms=ttft_ms, itl_ms=itl_ms)
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                rc = main(
                    [
                        "run",
                        "--base-url",
                        f"{server.base_url}/v1",
                        "--api",
                        api,
                        "--tokenizer",
                        str(TINY_TOKENIZER),
                        "--concurrency",
                        str(concurrency),
                        "--num-prompts",
                        str(2 * concurrency),
                        "--input-len",
                        "32",
                        "--output-len",
                        str(output_len),
                        "--out",
                        str(out),
                        "--no-progress",
                    ]
                )
        finally:
            stop_server(server)
        if rc != 0:
            return {"ok": False, "error": f"the self-check run exited with status {rc}"}
        summary = json.loads((out / "summary.json").read_text())
        result = {
            "ok": True,
            "concurrency": concurrency,
            "requests": 2 * concurrency,
            "output_len": output_len,
            "true_ttft_ms": ttft_ms,
            "true_itl_ms": itl_ms,
            **errors(latencies_from_run(out), measured_requests(read_log(log))),
            "client_send_lag_p99_ms": summary.get("p99_send_lag_ms"),
            "server_send_lag": send_lag_stats(log),
        }
    return result


def describe(check: dict) -> str:
    """One line for the terminal."""
    if not check.get("ok"):
        return f"self-check failed: {check.get('error')}"
    return (
        f"self-check at concurrency {check['concurrency']}: TTFT error {check['ttft_mean_error_ms']:+.2f} ms mean, "
        f"{check['ttft_p99_error_ms']:+.2f} ms p99; ITL p99 error {check['itl_p99_error_ms']:+.2f} ms"
    )
