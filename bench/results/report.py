"""`bench report`: compare engines per scenario and load point, from run folders alone.

Every folder under the tree holding summary.json and manifest.json is one run (read by
bench.results.runfolder). Runs are grouped by campaign, scenario and load point; each group has
one row per engine and the gap of each engine against the baseline engine:
gap % = (engine / baseline - 1) x 100, so a positive gap means more throughput (better) or more
latency (worse).
"""

from __future__ import annotations

import csv
import math
import re
import sys
from pathlib import Path

from bench.errors import UserError
from bench.results import slo_report, turns
from bench.results.runfolder import MARKS, Run, runs_under

# name -> (column title, summary keys tried in order, higher is better)
METRICS: dict[str, tuple[str, list[str], bool]] = {
    "output_throughput": ("Output tok/s", ["output_throughput"], True),
    "output_throughput_per_gpu": ("Output tok/s/GPU", ["output_throughput_per_gpu"], True),
    "total_token_throughput": ("Total tok/s", ["total_token_throughput"], True),
    "request_throughput": ("Req/s", ["request_throughput"], True),
    "interactivity_p50": ("tok/s/user p50", ["p50_interactivity_tok_s_user"], True),
}
for _lat in ("ttft", "tpot", "itl", "e2el", "ttfo", "answer_tpot"):
    for _stat in ("mean", "p50", "p90", "p95", "p99"):
        METRICS[f"{_lat}_{_stat}"] = (
            f"{_lat.upper().replace('_', ' ')} {_stat} (ms)",
            [f"{_stat}_{_lat}_ms"] + ([f"median_{_lat}_ms"] if _stat == "p50" else []),
            False,
        )
# GPU energy (bench.instrument.energy), from runs that sampled their GPUs: added to the default
# columns when any run of the tree has them.
METRICS["joules_per_output_token"] = ("J/out tok", ["joules_per_output_token"], False)
METRICS["output_tokens_per_joule"] = ("Out tok/J", ["output_tokens_per_joule"], True)
METRICS["mean_gpu_power_w"] = ("GPU W mean", ["mean_gpu_power_w"], False)
METRICS["gpu_throttled_share"] = ("Throttled", ["gpu_throttled_share"], False)
ENERGY_METRICS = ["joules_per_output_token", "mean_gpu_power_w", "gpu_throttled_share"]
DEFAULT_METRICS = ["output_throughput", "ttft_p50", "ttft_p99", "tpot_p50", "tpot_p99"]
SIGN = "gap % = (engine / baseline - 1) x 100: positive tok/s is better, positive latency is worse"


def add_arguments(p) -> None:
    p.add_argument("tree", metavar="RESULTS_TREE", help="Folder searched for run folders.")
    p.add_argument(
        "--baseline",
        metavar="ENGINE",
        help="Engine label the gaps are measured against; default vllm if present, "
        "else the first label alphabetically.",
    )
    p.add_argument(
        "--metric",
        nargs="+",
        choices=list(METRICS),
        default=DEFAULT_METRICS,
        metavar="NAME",
        help=f"Columns to show, the first one also as the headline table; any of {', '.join(METRICS)}.",
    )
    p.add_argument("--markdown", metavar="FILE", help="Also write the tables as Markdown here.")
    p.add_argument("--csv", metavar="FILE", help="Also write one CSV row per run here.")
    p.add_argument("--fmt", default="simple", help="tabulate table format for the terminal, e.g. simple, github, grid.")


def value(summary: dict, metric: str) -> float | None:
    for key in METRICS[metric][1]:
        if isinstance(summary.get(key), (int, float)):
            return float(summary[key])
    return None


def gap(v: float | None, base: float | None) -> float | None:
    if v is None or base is None or base == 0:
        return None
    return (v / base - 1) * 100


def scenario_key(s: str):
    m = re.fullmatch(r"(\d+)-(\d+)", s)
    return (0, int(m[1]), int(m[2]), "") if m else (1, 0, 0, s)


def load_key(lp: str):
    parts = dict(re.findall(r"([rc])([\d.]+|inf)", lp))
    return (float(parts.get("r", 0)), float(parts.get("c", 0)), lp)


def pick_baseline(runs: list[Run], wanted: str | None) -> str:
    engines = sorted({r.engine for r in runs})
    if wanted is None:
        return "vllm" if "vllm" in engines else engines[0]
    if wanted not in engines:
        raise UserError(f"no runs of baseline engine {wanted!r}; pick one of: {', '.join(engines)}.")
    return wanted


def compare(runs: list[Run], baseline: str, metrics: list[str]) -> list[dict]:
    """One row per run, sorted by campaign, scenario, load point, baseline first."""
    groups: dict[tuple, list[Run]] = {}
    for r in runs:
        groups.setdefault((r.campaign, r.scenario, r.load_point), []).append(r)
    rows = []
    for key in sorted(groups, key=lambda k: (k[0], scenario_key(k[1]), load_key(k[2]))):
        group = sorted(groups[key], key=lambda r: (r.engine != baseline, r.engine))
        base = next((r for r in group if r.engine == baseline), None)
        for r in group:
            row = {
                "campaign": r.campaign,
                "scenario": r.scenario,
                "load_point": r.load_point,
                "engine": r.engine,
                "baseline": baseline,
                "model": (r.manifest.get("server") or {}).get("model"),
            }
            for m in metrics:
                row[m] = value(r.summary, m)
                row[f"{m}_gap_pct"] = gap(row[m], value(base.summary, m) if base else None)
            ci = (((r.summary.get("steady") or {}).get("intervals") or {}).get("output_throughput") or {}).get("rel")
            row["output_throughput_ci_pct"] = ci * 100 if ci is not None else None  # 95 % half-width, --until-steady
            mark, why = r.flag or ("", "")
            row.update(flag=mark, flag_reason=why, notes=" | ".join(r.summary.get("notes") or []))
            doubts = [c for c in r.summary.get("checks") or [] if c.get("status") != "pass"]
            row["checks"] = " | ".join(f"{c['check']} {c['status']}: {c['why']}" for c in doubts)
            reasons = r.summary.get("gpu_throttle_reasons") or {}
            row["gpu_throttling"] = ", ".join(f"{k} {100 * v:.0f} % of samples" for k, v in reasons.items())
            row["run_dir"] = str(r.path)
            rows.append(row)
    return rows


def _marked(row: dict) -> str:
    """The marks a row's numbers carry: its flag, * when a note explains one of them, and ? when a
    check of the run warns or fails."""
    return row["flag"] + ("*" if row["notes"] else "") + ("?" if row["checks"] else "")


def footnotes(rows: list[dict]) -> list[str]:
    """One line per mark: which run it is on, and why."""
    lines = [
        f"{r['flag']} {r['engine']} {r['scenario']} {r['load_point']}: {r['flag_reason']}" for r in rows if r["flag"]
    ]
    lines += [f"* {r['engine']} {r['scenario']} {r['load_point']}: {r['notes']}" for r in rows if r["notes"]]
    lines += [f"? {r['engine']} {r['scenario']} {r['load_point']}: {r['checks']}" for r in rows if r["checks"]]
    return lines


def _cell(v: float | None, g: float | None, is_base: bool) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:,.2f}" + ("" if is_base or g is None else f" ({g:+.1f}%)")


def context(runs: list[Run]) -> str:
    """Model, hardware and date of a set of runs, from their manifests."""

    def distinct(values):
        return ", ".join(sorted({str(v) for v in values if v})) or "unknown"

    hw = []
    for r in runs:
        gpus, n = r.manifest.get("gpus") or [], r.manifest.get("gpu_count")
        if gpus:
            hw.append(f"{n or len(gpus)}x {gpus[0].get('name')}")
        elif n:
            hw.append(f"{n} GPUs")
        elif any(h in (r.manifest.get("server") or {}).get("base_url", "") for h in ("127.0.0.1", "localhost")):
            # a server on the client's own host without GPUs: the CPU engine
            hw.append(f"CPU {(r.manifest.get('client') or {}).get('cpu', 'unknown')}")
    return (
        f"model {distinct((r.manifest.get('server') or {}).get('model') for r in runs)}, "
        f"hardware {distinct(hw)}, "
        f"date {distinct((r.manifest.get('started') or '')[:10] for r in runs)}"
    )


def _table(body: list[list[str]], cols: list[str], fmt: str, labels: int) -> str:
    """A table whose first `labels` columns are names (left) and the rest numbers (right)."""
    from tabulate import tabulate

    align = ("left",) * labels + ("right",) * (len(cols) - labels)
    return tabulate(body, headers=cols, tablefmt=fmt, disable_numparse=True, colalign=align) + "\n"


def tables(runs: list[Run], rows: list[dict], metrics: list[str], fmt: str, md: bool) -> str:

    out = []
    for camp in dict.fromkeys(r["campaign"] for r in rows):
        crows = [r for r in rows if r["campaign"] == camp]
        base, head = crows[0]["baseline"], metrics[0]
        title = f"{camp}: {context([r for r in runs if r.campaign == camp])}"
        out.append(f"## {title}\n" if md else f"{title}\n{'=' * len(title)}")
        # Headline, as the seed README: one row per scenario and load, engines side by side.
        engines = sorted({r["engine"] for r in crows}, key=lambda e: (e != base, e))
        wide: dict[tuple, dict] = {}
        for r in crows:
            wide.setdefault((r["scenario"], r["load_point"]), {})[r["engine"]] = r
        cols = ["Scenario", "Load"] + engines + [f"{e} vs {base}" for e in engines if e != base]
        body = [
            [s, lp]
            + [(_cell(by[e][head], None, True) + " " + _marked(by[e])).strip() if e in by else "-" for e in engines]
            + [
                f"{by[e][head + '_gap_pct']:+.1f}%" if e in by and by[e][head + "_gap_pct"] is not None else "-"
                for e in engines
                if e != base
            ]
            for (s, lp), by in wide.items()
        ]
        out.append(f"{METRICS[head][0]} by engine; {SIGN}.\n")
        out.append(_table(body, cols, fmt, labels=2))
        # Detail: one row per engine and group, every chosen metric with its gap.
        cols = ["Scenario", "Load", "Engine"] + [METRICS[m][0] for m in metrics]
        body = [
            [r["scenario"], r["load_point"], f"{r['engine']} {_marked(r)}".strip()]
            + [_cell(r[m], r[f"{m}_gap_pct"], r["engine"] == base) for m in metrics]
            for r in crows
        ]
        if any(r["output_throughput_ci_pct"] is not None for r in crows):  # runs measured until steady
            cols.append("tok/s +-")
            for line, r in zip(body, crows):
                ci = r["output_throughput_ci_pct"]
                line.append("-" if ci is None else f"{ci:.1f}%")
        out.append(f"Per engine, baseline {base}; (gap %) as above; +-: 95 % interval of output tok/s.\n")
        out.append(_table(body, cols, fmt, labels=3))
        if notes := footnotes(crows):
            legend = (
                f"{MARKS['failed']} failed, {MARKS['partial']} partial, {MARKS['some failed']} some requests failed"
            )
            out.append(f"Marks ({legend}, * a note on the numbers, ? a check that warns or fails):\n")
            out.append("\n".join(f"- {line}" if md else f"  {line}" for line in notes) + "\n")
        if throttled := [
            f"{r['engine']} {r['scenario']} {r['load_point']}: {r['gpu_throttling']}"
            for r in crows
            if r["gpu_throttling"]
        ]:
            out.append("GPU throttling seen (clock event reasons that limit the clocks):\n")
            out.append("\n".join(f"- {line}" if md else f"  {line}" for line in throttled) + "\n")
        if per_turn := turns.table([r for r in runs if r.campaign == camp], fmt, md):
            out.append(per_turn)
    return "\n".join(out)


def with_ttfo(runs: list[Run], metrics: list[str]) -> list[str]:
    """The columns, with TTFO (first answer token) beside each TTFT column when a run had reasoning:
    there TTFT times the first thinking token, while the user waits for the answer."""
    if not any(r.summary.get("requests_with_reasoning") for r in runs):
        return metrics
    out = []
    for m in metrics:
        out.append(m)
        twin = m.replace("ttft_", "ttfo_", 1)
        if m.startswith("ttft_") and twin not in metrics:
            out.append(twin)
    return out


def write(tree, markdown=None, csv_file=None, *, baseline=None, metrics=DEFAULT_METRICS, fmt="simple") -> None:
    """Print the tables of the runs under `tree`; also write them as Markdown, and one CSV row per run."""
    runs = runs_under(tree)
    if metrics is DEFAULT_METRICS and any(r.summary.get("gpu_energy_j") is not None for r in runs):
        metrics = DEFAULT_METRICS + ENERGY_METRICS
    metrics = with_ttfo(runs, metrics)
    baseline = pick_baseline(runs, baseline)
    rows = compare(runs, baseline, metrics)
    answers = slo_report.lines(tree)
    print(tables(runs, rows, metrics, fmt, md=False) + "".join(f"\nSLO answer, {a}" for a in answers))
    if markdown:
        md = tables(runs, rows, metrics, "github", md=True)
        md += "\n## SLO answers\n\n" + "\n".join(f"- {a}" for a in answers) + "\n" if answers else ""
        Path(markdown).write_text(md, encoding="utf-8")
        print(f"wrote {markdown}", file=sys.stderr)
    if csv_file:
        with open(csv_file, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        print(f"wrote {csv_file}", file=sys.stderr)


def main(args) -> int:
    from tabulate import tabulate_formats

    if args.fmt not in tabulate_formats:
        raise UserError(f"unknown --fmt {args.fmt!r}; use one of: {', '.join(tabulate_formats)}.")
    write(args.tree, args.markdown, args.csv, baseline=args.baseline, metrics=args.metric, fmt=args.fmt)
    return 0
