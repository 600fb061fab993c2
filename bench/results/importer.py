"""`bench import`: vLLM benchmark result JSON -> our run folders, recomputed where possible.

Reads files written by vLLM's `benchmark_serving.py --save-result` or `vllm bench serve
--save-result`. File names `<engine>-<in>-<out>-<tag>.json` / `<engine>-sharegpt-<tag>.json`
(the R1-Benchmark convention) give the engine label (`<engine>-<tag>`, tag `ep` = expert
parallel) and the scenario; other names fall back to the file's `label`/`backend` and the file
name. With per-request arrays the requests become Records and bench.instrument.metrics recomputes every
statistic over the file's own duration; summary-only files keep the file's numbers.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from datetime import datetime
from itertools import accumulate
from pathlib import Path

from bench import __version__
from bench.errors import UserError
from bench.instrument.metrics import summarise
from bench.instrument.records import Record, RecordWriter

NAME = re.compile(
    r"^(?P<engine>[A-Za-z0-9_.]+?)-(?:(?P<inp>\d+)-(?P<out>\d+)|(?P<ds>sharegpt))"
    r"(?:-(?P<tag>[A-Za-z0-9_.]*))?$"
)
ARRAYS = ("input_lens", "output_lens", "ttfts", "itls", "errors")
# Setup keys that describe the run rather than measure it: the manifest keeps them.
SETUP = {
    "date",
    "backend",
    "label",
    "model_id",
    "tokenizer_id",
    "best_of",
    "num_prompts",
    "request_rate",
    "burstiness",
    "max_concurrency",
}
LISTS = set(ARRAYS) | {"generated_texts", "latencies", "start_times", "queue_times"}


@dataclass
class Source:
    path: Path
    data: dict
    campaign: str
    engine: str
    scenario: str
    load_point: str
    input_len: int | None
    output_len: int | None


def add_arguments(p) -> None:
    p.add_argument(
        "paths",
        nargs="+",
        metavar="FILE_OR_DIR",
        help="vLLM result JSON files, or folders searched recursively for *.json.",
    )
    p.add_argument(
        "--out", required=True, metavar="RESULTS_DIR", help="Results tree to write run folders into, e.g. results/."
    )
    p.add_argument(
        "--campaign", metavar="NAME", help="Campaign name for every file; default: the name of each file's folder."
    )
    p.add_argument(
        "--gpu-count", type=int, metavar="N", help="GPUs the server used (for per-GPU throughput), when you know it."
    )
    p.add_argument("--gpu-name", metavar="NAME", help="GPU model for the manifest and plot titles, e.g. 'NVIDIA H200'.")


def load_point(rate, concurrency) -> str:
    """c8, r2.5, r2.5-c64; an unbounded rate without a cap is 'rinf'."""
    r = None if rate in (None, "inf") or float(rate) == float("inf") else float(rate)
    parts = ([f"r{r:g}"] if r is not None else []) + ([f"c{concurrency}"] if concurrency else [])
    return "-".join(parts) or "rinf"


def read_source(path: Path, campaign: str | None) -> Source:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(
            f"cannot read {path} as JSON ({e}); pass result files written by vLLM's benchmark with --save-result."
        ) from None
    if not isinstance(data, dict) or "duration" not in data or "completed" not in data:
        raise UserError(
            f"{path} is not a vLLM benchmark result (no 'duration'/'completed' keys); "
            "pass files written with --save-result."
        )
    if "ttfts" in data:
        n = len(data["ttfts"])
        missing = [k for k in ARRAYS if not isinstance(data.get(k), list) or len(data[k]) != n]
        if missing:
            raise UserError(
                f"{path} has per-request arrays of unequal length or missing "
                f"({', '.join(missing)}); the file is damaged, re-save it."
            )
    m = NAME.match(path.stem)
    if m:
        engine = m["engine"] + (f"-{m['tag']}" if m["tag"] else "")
        scenario = f"{m['inp']}-{m['out']}" if m["inp"] else m["ds"]
        inp, out = (int(m["inp"]), int(m["out"])) if m["inp"] else (None, None)
    else:
        engine, scenario, inp, out = data.get("label") or data.get("backend") or "unknown", path.stem, None, None
    return Source(
        path,
        data,
        campaign or path.resolve().parent.name,
        engine,
        scenario,
        load_point(data.get("request_rate"), data.get("max_concurrency")),
        inp,
        out,
    )


def records(src: Source) -> list[Record]:
    """One Record per request. Start times are unknown in old files, so every request is sent
    at 0 (its own clock); chunk arrivals are the TTFT plus the running sum of the ITLs."""
    d = src.data
    starts = d.get("start_times") or [0.0] * len(d["ttfts"])
    t0 = min(starts) if starts else 0.0
    out = []
    for i, (ttft, itl, n_in, n_out, err) in enumerate(
        zip(d["ttfts"], d["itls"], d["input_lens"], d["output_lens"], d["errors"])
    ):
        sent = starts[i] - t0
        rec = Record(
            id=i,
            warmup=False,
            scheduled=sent,
            sent=sent,
            input_len=n_in,
            output_len=src.output_len,
            usage_source="vllm-bench",
            status=200,
        )
        if err or not ttft:
            lines = str(err or "").strip().splitlines()  # often a traceback: keep its last line
            rec.error = lines[-1] if lines else "no content received"
            rec.error_kind, rec.status = "vllm-bench", 0
        else:
            rec.chunk_times = [sent + t for t in accumulate([ttft, *itl])]
            rec.first, rec.last = rec.chunk_times[0], rec.chunk_times[-1]
            if d.get("latencies"):
                rec.last = sent + d["latencies"][i]
            rec.completion_tokens = n_out
            # Each chunk's token count is known only when chunks and tokens pair up one to one.
            rec.chunk_tokens = [1] * len(rec.chunk_times) if len(rec.chunk_times) == n_out else []
        out.append(rec)
    return out


def summary(src: Source, recs: list[Record] | None, gpu_count: int | None) -> dict:
    d = src.data
    # vLLM 0.8 wrote the goodput key as "request_goodput:"; keep the fixed spelling.
    original = {k.rstrip(":"): v for k, v in d.items() if k not in SETUP and k not in LISTS}
    if recs is not None:
        s = summarise(recs, duration=float(d["duration"]), gpu_count=gpu_count)
        s["recomputed_from_requests"] = True
    else:
        s = dict(original)
        s.setdefault("failed", max(0, int(d.get("num_prompts") or 0) - int(d["completed"])))
        s["recomputed_from_requests"] = False
        if gpu_count:
            s["gpu_count"] = gpu_count
            for k in ("request_throughput", "output_throughput", "total_token_throughput"):
                if s.get(k) is not None:
                    s[f"{k}_per_gpu"] = s[k] / gpu_count
    s["imported_original"] = original
    return s


def manifest(src: Source, args) -> dict:
    d = src.data
    try:
        started = datetime.strptime(str(d.get("date")), "%Y%m%d-%H%M%S").isoformat()
    except ValueError:
        started = None  # the benchmark host's local time; its zone is not recorded
    rate = d.get("request_rate")
    return {
        "tool": {"name": "bench", "version": __version__},
        "command": ["bench", "import", *map(str, args.paths), "--out", str(args.out)],
        "started": started,
        "gpus": [{"name": args.gpu_name}] * (args.gpu_count or 1) if args.gpu_name else [],
        "gpu_count": args.gpu_count,
        "server": {"model": d.get("model_id"), "engine": src.engine.split("-")[0], "label": src.engine},
        "api": "chat" if "chat" in str(d.get("backend")) else "completions",
        "workload": {
            "name": "random" if src.input_len else src.scenario,
            "input_len": src.input_len,
            "output_len": src.output_len,
            "num_prompts": d.get("num_prompts"),
            "dataset": None if src.input_len else src.scenario,
        },
        "load": {
            "concurrency": d.get("max_concurrency"),
            "rate": None if rate in (None, "inf") else rate,
            "burstiness": d.get("burstiness"),
        },
        "campaign": {"name": src.campaign, "scenario": src.scenario, "load_point": src.load_point},
        "partial": False,
        "imported_from": "vllm-bench",
        "source": {
            "path": str(src.path.resolve()),
            "date": d.get("date"),
            "backend": d.get("backend"),
            "tokenizer_id": d.get("tokenizer_id"),
        },
    }


def find_files(paths: list[str]) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*.json") if not f.name.endswith(".pytorch.json"))
            if not found:
                raise UserError(f"no *.json files under {p}; point at vLLM result files.")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise UserError(f"{p} does not exist; give vLLM result JSON files or their folder.")
    return files


def main(args) -> int:
    # Read and check everything first, so a bad file leaves nothing half imported.
    sources = [read_source(f, args.campaign) for f in find_files(args.paths)]
    if args.gpu_count is not None and args.gpu_count < 1:
        raise UserError(f"--gpu-count must be at least 1, not {args.gpu_count}.")
    out = Path(args.out)
    imported = 0
    for src in sources:
        run_dir = out / src.campaign / src.engine / src.scenario / src.load_point
        try:
            run_dir.mkdir(parents=True, exist_ok=False)
        except FileExistsError:
            print(
                f"skipped {src.path}: {run_dir} exists and bench import never overwrites a run "
                "folder; delete it or import with another --campaign.",
                file=sys.stderr,
            )
            continue
        recs = records(src) if "ttfts" in src.data else None
        if recs is not None:
            writer = RecordWriter(run_dir / "requests.jsonl")
            for rec in recs:
                writer.write(rec)
            writer.close()
        for name, obj in (("summary.json", summary(src, recs, args.gpu_count)), ("manifest.json", manifest(src, args))):
            (run_dir / name).write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
        print(f"imported {src.path} -> {run_dir}", file=sys.stderr)
        imported += 1
    print(f"{imported} of {len(sources)} files imported into {out}", file=sys.stderr)
    return 0
