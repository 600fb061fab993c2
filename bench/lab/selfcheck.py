"""`bench run --self-check`: this client against a fresh calibration server, before the real run.

A short closed loop at the run's concurrency, measured with the same `measure(spec)` as the
run itself; its errors against the server's log are the run's error bar, kept in its manifest.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from bench.errors import UserError
from bench.instrument import spec
from bench.instrument.measure import measure
from bench.lab.accuracy import errors, latencies_from_run, measured_requests
from bench.lab.calibration import read_log, send_lag_stats, start_server, stop_server
from bench.paths import TINY_MODEL


def self_check(
    concurrency: int, api: str = "completions", output_len: int = 32, ttft_ms: float = 50.0, itl_ms: float = 20.0
) -> dict:
    """Run this client against a fresh calibration server at `concurrency`; its error bar."""
    with tempfile.TemporaryDirectory(prefix="bench-self-check-") as tmp:
        log, out = Path(tmp) / "server.jsonl", Path(tmp) / "run"
        server = start_server(0, log=log, ttft_ms=ttft_ms, itl_ms=itl_ms)
        try:
            # A command line rather than a RunSpec built by hand: the flags' defaults apply.
            check = spec.parse(
                ["--base-url", f"{server.base_url}/v1", "--api", api, "--tokenizer", str(TINY_MODEL)]
                + ["--concurrency", str(concurrency), "--num-prompts", str(2 * concurrency)]
                + ["--input-len", "32", "--output-len", str(output_len), "--out", str(out), "--no-progress"]
                + ["--scrape-interval", "0"]  # the client's error bar, not the server's telemetry
                + ["--gpu-ids", "none"]  # nor the GPUs': the calibration server uses none
            )
            result = measure(check)
        except UserError as e:
            return {"ok": False, "error": f"the self-check run was refused: {e}"}
        finally:
            stop_server(server)
        if result.partial:
            return {"ok": False, "error": "the self-check run was interrupted"}
        return {
            "ok": True,
            "concurrency": concurrency,
            "requests": 2 * concurrency,
            "output_len": output_len,
            "true_ttft_ms": ttft_ms,
            "true_itl_ms": itl_ms,
            **errors(latencies_from_run(out), measured_requests(read_log(log))),
            "client_send_lag_p99_ms": result.summary.get("p99_send_lag_ms"),
            "server_send_lag": send_lag_stats(log),
        }


def for_run(run: spec.RunSpec) -> dict:
    """The self-check of a run (`measure`'s hook): at its concurrency and endpoint, said on stderr."""
    check = self_check(run.concurrency or 64, run.api)
    print(describe(check), file=sys.stderr, flush=True)
    return check


def describe(check: dict) -> str:
    """One line for the terminal."""
    if not check.get("ok"):
        return f"self-check failed: {check.get('error')}"
    return (
        f"self-check at concurrency {check['concurrency']}: TTFT error {check['ttft_mean_error_ms']:+.2f} ms mean, "
        f"{check['ttft_p99_error_ms']:+.2f} ms p99; ITL p99 error {check['itl_p99_error_ms']:+.2f} ms"
    )
