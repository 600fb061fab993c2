"""The SLO answers a campaign left (<scenario>/slo.json, bench.results.sweep), for reports and plots."""

from __future__ import annotations

import json
from pathlib import Path


def read(scenario_folder: Path) -> dict | None:
    f = Path(scenario_folder) / "slo.json"
    try:
        return json.loads(f.read_text())
    except (OSError, ValueError):
        return None


def sentence(ans: dict) -> str:
    """'c16 (between c16, which meets, and c17, which misses; 250 requests)', said plainly."""
    slos = ", ".join(f"{k} <= {v:g} ms" for k, v in ans["slo_ms"].items())
    lo, hi = ans["bounded_by"]["meets"], ans["bounded_by"]["misses"]
    if lo is None:
        head = f"no measured load meets {slos}" + (f" (lowest tried: {hi})" if hi else "")
    elif hi is None:
        head = f"every measured load meets {slos}, up to {lo}; the answer may lie higher"
    else:
        head = f"{lo} meets {slos}, {hi} does not"
    unsure = f"; near the limit, within the interval: {', '.join(ans['unsure'])}" if ans.get("unsure") else ""
    good = f"; goodput there {ans['goodput_req_s']:.2f} req/s" if ans.get("goodput_req_s") is not None else ""
    return f"{head} ({ans['mode']} points, {ans['requests']} requests{good}{unsure})"


def lines(tree: Path) -> list[str]:
    """One line per scenario folder under `tree` holding an answer: 'campaign/engine/scenario: sentence'."""
    out = []
    for f in sorted(Path(tree).rglob("slo.json")):
        if (ans := read(f.parent)) is not None and "slo_ms" in ans:
            where = "/".join(f.parent.parts[-3:])
            out.append(f"{where}: {sentence(ans)}")
    return out
