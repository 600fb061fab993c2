"""`bench campaign`'s command line: its flags, and the key=value words of the `just bench` spelling.

`bench campaign model=/DeepSeek-R1 engine=vllm-tp8 scenarios=seed` means `bench campaign seed
--model /DeepSeek-R1 --label vllm-tp8 --name seed-DeepSeek-R1`. The words and SET may stand
anywhere among the flags (bench.cli hands over the words that follow a flag), since `just bench`
writes its own defaults first and the user's words after them. Who wins: SET or a flag wins over
a word for the same setting; among words the last one wins (so the user's words win over the
recipe's defaults); an empty value (`sharegpt=`) unsets. The default campaign name is
<set>-<model basename> when the model came as a model= word, so the same `just bench` line
resumes its campaign and two models never share one; without a model= word it stays the set's
name.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from bench.errors import UserError
from bench.paths import RESULTS as DEFAULT_RESULTS

# word -> the flag's dest it stands for
WORDS = {
    "model": "model",
    "engine": "label",
    "scenarios": "scenarios",
    "url": "base_url",
    "campaign": "name",
    "sharegpt": "dataset_path",
}
DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "scenarios",
        nargs="?",
        metavar="SET",
        help="Scenario set: a name in recipes/scenarios/ (seed, industry, demo) or a .toml file.",
    )
    p.add_argument(
        "words",
        nargs="*",
        metavar="KEY=VALUE",
        help="The `just bench` spelling, anywhere among the flags: model= (--model), engine= (--label), "
        "scenarios= (SET), url= (--base-url), campaign= (--name), sharegpt= (--dataset-path); "
        "SET and flags win over words, the last word wins over earlier ones.",
    )
    p.add_argument(
        "--base-url",
        help=f"OpenAI-compatible base URL of the running server ($OPENAI_BASE_URL or {DEFAULT_BASE_URL}).",
    )
    p.add_argument("--model", help="Served model name for every run; default: the first one the server lists.")
    p.add_argument("--label", help="Engine label, also its results folder, e.g. vllm-tp8; default: the serve recipe's.")
    p.add_argument(
        "--name",
        help="Campaign name, its folder under --results (same name resumes); default: the set's name, "
        "<set>-<model basename> when the model came as model=.",
    )
    p.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="Results root folder ($RESULTS or results/).")
    p.add_argument("--pause", type=float, default=5.0, help="Seconds to wait between load points (server drains).")
    p.add_argument(
        "--skip",
        action="append",
        default=[],
        metavar="SCENARIO",
        help="Leave out scenarios matching this name or glob (repeatable): ones an engine cannot serve.",
    )
    p.add_argument(
        "--warmup-sweep",
        action="store_true",
        help="Run the first sweep once beforehand into <name>-warmup/ and ignore it (for JIT-compiling "
        "engines such as SGLang with DeepGEMM).",
    )
    p.add_argument(
        "--hook",
        metavar="CMD",
        help="Shell command run between scenarios (restart the server, flush its cache); "
        "$BENCH_SCENARIO names the next one (also $BENCH_CAMPAIGN, $BENCH_LABEL, $BENCH_BASE_URL); "
        "it must return once the server is ready.",
    )
    p.add_argument(
        "--redo", action="store_true", help="Measure finished points again (their folders are renamed, not deleted)."
    )
    p.add_argument(
        "--dataset-path",
        metavar="FILE",
        help="Dataset file for scenarios that read one, e.g. ShareGPT_V3_unfiltered_cleaned_split.json.",
    )
    p.add_argument(
        "--run-args",
        default="",
        metavar="ARGS",
        help='Extra flags for every `bench run` in one string, e.g. --run-args="--api chat --gpus 8".',
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="Print the plan and the fit check's verdicts, and stop without measuring.",
    )
    p.add_argument(
        "--allow-queueing",
        action="store_true",
        help="Measure points the recorded serve command would queue (more in flight than it runs at once), "
        "to study queueing on purpose; without it the campaign refuses them before measuring.",
    )
    p.add_argument(
        "--points",
        choices=["grid", "adaptive"],
        default="grid",
        help="grid: every load point of the set; adaptive: start at its lowest and highest load, add points "
        "where the frontier is least known, each run until steady (--ci-target); why each went where: "
        "<scenario>/points.md.",
    )
    p.add_argument(
        "--ci-target",
        type=float,
        default=0.02,
        help="With --points adaptive: the relative 95 %% interval each point is run to, and the frontier "
        "change below which no point is added (0.02 = 2 %%).",
    )
    p.add_argument(
        "--slo",
        metavar="NAME=MS,...",
        help="Find the highest load meeting every SLO (e.g. ttft_p99=500,tpot_p99=50): from the grid's "
        "points, or by bisection with --points adaptive; the answer goes to <scenario>/slo.json.",
    )
    p.add_argument(
        "--slo-resolution",
        type=float,
        default=0.25,
        help="With --slo and --points adaptive: bisect until the highest load that meets and the lowest that "
        "misses are within this fraction of each other (0.25 = 25 %%; 0: down to neighbouring concurrencies).",
    )
    p.add_argument(
        "--report",
        action="store_true",
        help="After measuring (also when some points failed), print the tables, write report.md and "
        "report.csv into the campaign folder and draw the plots, as `just report` and `just plot` do.",
    )


def unknown(word: str, scenario_set: str | None) -> UserError:
    second = f" (the scenario set is already {scenario_set!r})" if scenario_set else ""
    return UserError(
        f"unknown argument {word!r}{second}; use {' '.join(f'{k}=' for k in WORDS)}, "
        "one scenario set, or a flag (see bench campaign --help)"
    )


def apply(args) -> dict[str, str]:
    """Fold SET and the words into the flags' values in `args`; the words given, by key."""
    scenario_set, words = None, {}
    for w in filter(None, [args.scenarios, *args.words]):
        key, eq, value = w.partition("=")
        if eq and key in WORDS:
            words[key] = value
        elif eq and key.isidentifier():  # a key we do not know; a path holding '=' is still a set
            raise unknown(w, None)
        elif scenario_set:
            raise unknown(w, scenario_set)
        else:
            scenario_set = w
    args.scenarios = scenario_set
    for key, dest in WORDS.items():
        if getattr(args, dest) is None and words.get(key):
            setattr(args, dest, words[key])
    if not args.scenarios:
        raise UserError("no scenario set: give one as SET or scenarios=NAME (seed, industry, demo or a .toml file)")
    args.base_url = args.base_url or os.environ.get("OPENAI_BASE_URL", DEFAULT_BASE_URL)
    return {k: v for k, v in words.items() if v}


def default_name(set_path: Path, model: str | None, words: dict[str, str], from_server: bool = False) -> str:
    """The set's name, followed by the model's basename when the model came as a model= word, or,
    in the `just bench` spelling (words given) with no model named, is the server's only one."""
    named = "model" in words or (from_server and bool(words))
    return f"{set_path.stem}-{Path(model).name}" if model and named else set_path.stem
