"""The summary keys of a session workload, from its records (each carries `session` and `turn`).

- `per_turn`: one entry per turn index (0 = the first turn of a conversation): `turn`,
  `requests` (measured), `completed`, and the TTFT and E2EL statistics of its timed requests
  (the same definitions as the whole run's, bench.instrument.metrics), plus `mean_prompt_tokens`.
  Later turns carry longer histories: with a working prefix cache their TTFT stays near the first's.
- `conversations`: measured conversations; `sessions_cut_short`: those whose last sent turn failed
  (a failed turn ends its conversation: there is no answer to continue from).
- `theoretical_prefix_hit_rate`: the share of the successful turns' prompt tokens (server usage)
  that repeat a prompt the same conversation already sent, i.e. the previous turn's whole prompt,
  which is a prefix of the next when the history is sent back unchanged. A prefix cache large
  enough to keep every conversation serves at least this share (more when it also keeps the
  previous answer's tokens); the prefix_cache check compares the server's figure with it.
"""

from __future__ import annotations

from collections import defaultdict

from bench.instrument import metrics, sessions
from bench.instrument.records import Record


def summarise(records: list[Record]) -> dict:
    recs = [r for r in records if not r.warmup and r.session is not None]
    if not recs:
        return {}
    by_turn: dict[int, list[Record]] = defaultdict(list)
    by_session: dict[int, list[Record]] = defaultdict(list)
    for r in recs:
        by_turn[r.turn].append(r)
        by_session[r.session].append(r)
    per_turn = []
    for turn in sorted(by_turn):
        timed = metrics.timed_requests(by_turn[turn])
        prompts = [r.prompt_tokens for r in timed if r.prompt_tokens is not None]
        entry = {"turn": turn, "requests": len(by_turn[turn]), "completed": sum(r.ok for r in by_turn[turn])}
        entry |= metrics._stats("ttft", [metrics.ttft(r) for r in timed])
        entry |= metrics._stats("e2el", [metrics.e2el(r) for r in timed])
        entry["mean_prompt_tokens"] = sum(prompts) / len(prompts) if prompts else None
        per_turn.append(entry)
    reused = total = 0
    for turns in by_session.values():
        turns.sort(key=lambda r: r.turn)
        ok = [r.prompt_tokens if r.ok else None for r in turns]
        for r, reuse in zip(turns, sessions.theoretical_reuse(ok)):
            if r.ok and r.prompt_tokens:
                reused += reuse
                total += r.prompt_tokens
    return {
        "conversations": len(by_session),
        "sessions_cut_short": sum(1 for turns in by_session.values() if not turns[-1].ok),
        "per_turn": per_turn,
        "theoretical_prefix_hit_rate": reused / total if total else None,
    }


def format_turns(summary: dict) -> str:
    """The per-turn table `bench run` prints for a session run, and what the prefix cache served."""
    from tabulate import tabulate

    def ms(v) -> str:
        return "-" if v is None else f"{v:,.2f}"

    rows = [
        [t["turn"], f"{t['completed']}/{t['requests']}", ms(t["mean_prompt_tokens"])]
        + [ms(t.get(k)) for k in ("mean_ttft_ms", "p50_ttft_ms", "p99_ttft_ms", "p50_e2el_ms")]
        for t in summary.get("per_turn") or []
    ]
    cols = ["turn", "done", "prompt tok", "TTFT mean", "TTFT p50", "TTFT p99", "E2EL p50"]
    out = tabulate(rows, headers=cols, tablefmt="simple", disable_numparse=True)
    hit = summary.get("theoretical_prefix_hit_rate")
    out += f"\n{summary.get('conversations')} conversations, {summary.get('sessions_cut_short')} cut short"
    out += "" if hit is None else f"; the workload repeats {hit:.1%} of its prompt tokens"
    cache = next((c for c in summary.get("checks") or [] if c.get("check") == "prefix_cache"), None)
    if cache:
        out += f"\nprefix_cache check {cache['status']}: {cache['why']}"
    return out
