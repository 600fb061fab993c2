"""How far a client's numbers are from the truth: the calibration server's own log.

Error = what the client reports minus what the server logged (when it received each
request, when it really sent each chunk). Used by the self-check (bench.lab.selfcheck) and
by `just bench-client`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.instrument import metrics
from bench.instrument.records import read_records


def latencies_from_log(log: dict[str, dict], ids: set[str] | None = None) -> dict[str, np.ndarray]:
    """True TTFT, TTFO, chunk ITL and E2EL (ms) of every request in a calibration log (TTFO: the
    chunk that began the answer; the first chunk when the request had no reasoning)."""
    entries = [e for rid, e in log.items() if ids is None or rid in ids]
    answers = [(e, e.get("first_answer_chunk", 0)) for e in entries]
    return {
        "ttft": np.array([e["sent"][0] - e["received"] for e in entries]) * 1e3,
        "ttfo": np.array([e["sent"][i] - e["received"] for e, i in answers if i is not None]) * 1e3,
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
        "ttfo": np.array([t for t in map(metrics.ttfo, recs) if t is not None]) * 1e3,
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
    """Client minus truth (ms) for the statistics the accuracy targets name (TTFO where both
    sides have it: vLLM's client does not)."""
    out = {}
    for name in ("ttft", "ttfo", "itl", "e2el"):
        if name not in measured or name not in truth:
            continue
        m, t = measured[name], truth[name]
        if len(m) and len(t):
            out[f"{name}_mean_error_ms"] = float(m.mean() - t.mean())
            out[f"{name}_p99_error_ms"] = float(np.percentile(m, 99) - np.percentile(t, 99))
    return out
