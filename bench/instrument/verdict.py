"""What a run's numbers may be trusted for: its verdict, and notes a reader needs beside them.

The verdict is written into summary.json (`verdict`: status and reasons) and decides `bench
run`'s exit status, so a run that failed or was cut short says so in its summary, its exit status
and every report:
- "failed": no request completed, or fewer than `min_success` of the measured requests that the
  run did not cut short itself succeeded (the errors by kind are named) or a client worker process died
  (its unfinished requests are missing from the records);
- "partial": the run was interrupted (Ctrl-C, SIGTERM, or rebuilt from its records after it was
  killed); what it measured is kept and summarised, but the load it planned was not all sent;
- "ok": neither.
Notes explain a number that looks wrong but is a real property of the server.
"""

from __future__ import annotations

TOGETHER_NOTE = 0.05  # share of chunk gaps under 0.1 ms above which the summary says why


def judge(summary: dict, min_success: float) -> dict:
    """The verdict of a summary (metrics.summarise's output plus `partial`)."""
    reasons = []
    rate = summary.get("success_rate")
    kinds = ", ".join(f"{k} {n}" for k, n in (summary.get("errors_by_kind") or {}).items())
    if not summary.get("completed"):
        reasons.append("no request completed" + (f" ({kinds})" if kinds else ""))
    elif rate is not None and rate < min_success:
        reasons.append(f"only {rate:.1%} of the requests succeeded, below --min-success {min_success:.0%} ({kinds})")
    for gone in (summary.get("workers") or {}).get("died", []):
        reasons.append(
            f"client worker {gone['worker']} {gone['why']}: its unfinished requests are missing "
            f"({gone['records_kept']} of its records kept)"
        )
    if reasons:
        return {"status": "failed", "reasons": reasons}
    if summary.get("partial"):
        return {"status": "partial", "reasons": ["the run was interrupted: not all of its planned load was measured"]}
    return {"status": "ok", "reasons": []}


def notes(summary: dict) -> list[str]:
    """Sentences about numbers that need their reason beside them."""
    out = []
    share = summary.get("zero_gap_share")
    if share is not None and share > TOGETHER_NOTE:
        out.append(
            f"{share:.1%} of the chunk gaps are under 0.1 ms: the server sent those chunks together (or the "
            "client read them together), so the ITL percentiles hold zeros; read the token ITL and TPOT"
        )
    sources = {
        k: n for k, n in (summary.get("chunk_tokens_source") or {}).items() if k not in ("usage", "not recorded")
    }
    if sources:
        how = ", ".join(f"{k} {n}" for k, n in sources.items())
        out.append(
            f"the server reported no per-chunk usage: the client shared each request's tokens among its chunks ({how}; "
            "see bench/instrument/chunk_tokens.py)"
        )
    if summary.get("chunk_token_mismatches"):
        out.append(
            f"{summary['chunk_token_mismatches']} requests' chunk token counts do not add up to their output tokens: "
            "their token ITL shares are estimates"
        )
    return out
