"""`bench campaign` against the real CPU engine: one folder per point, resume, skips, hook, warm-up,
and the report and plots of the result; plus the scenario-file errors, which need no server."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from bench.cli import main

SET = """
num_prompts = 4

[[scenario]]
name = "short"
input_len = 32
output_len = 8
concurrency = [1, 2]

[[scenario]]
name = "long"
input_len = 96
output_len = 4
concurrency = [2]
rates = [20]
max_concurrency = 2

[[scenario]]
name = "not-on-cpu"
input_len = 32
output_len = 8
concurrency = [1]
skip = ["vllm-cpu"]
"""
POINTS = {"short": ["c1", "c2"], "long": ["c2", "r20-c2"]}


def read(path):
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def swept(cpu_engine, tmp_path_factory):
    """One campaign with a warm-up sweep and a hook that logs the scenario it runs before."""
    tmp = tmp_path_factory.mktemp("campaign")
    (tmp / "set.toml").write_text(SET)
    hook_log = tmp / "hook.log"
    rc = main(
        [
            "campaign",
            str(tmp / "set.toml"),
            "--base-url",
            cpu_engine["base_url"],
            "--name",
            "main",
            "--results",
            str(tmp / "results"),
            "--pause",
            "0",
            "--warmup-sweep",
            "--hook",
            f'echo "$BENCH_SCENARIO $BENCH_CAMPAIGN $BENCH_LABEL" >> {hook_log}',
        ]
    )
    return {"rc": rc, "results": tmp / "results", "hook_log": hook_log}


def test_campaign_writes_one_run_folder_per_point(swept):
    assert swept["rc"] == 0
    label = swept["results"] / "main" / "vllm-cpu"  # the label the serve recipe recorded
    assert sorted(p.name for p in label.iterdir()) == ["long", "short"]  # not-on-cpu skipped
    for scenario, loads in POINTS.items():
        assert sorted(p.name for p in (label / scenario).iterdir()) == sorted(loads)
        for i, load in enumerate(loads):
            run = label / scenario / load
            man, summary = read(run / "manifest.json"), read(run / "summary.json")
            assert man["campaign"] == {"name": "main", "scenario": scenario, "load_point": load}
            assert man["workload"]["seed"] == i  # a seed per point: no prompt repeats across points
            assert summary["completed"] == 4 and summary["partial"] is False
            assert len((run / "requests.jsonl").read_text().splitlines()) == 4
    assert read(label / "long" / "r20-c2" / "manifest.json")["load"]["rate"] == 20


def test_warmup_sweep_lands_outside_the_campaign(swept):
    warm = swept["results"] / "main-warmup" / "vllm-cpu"
    assert sorted(p.name for p in warm.iterdir()) == ["short"]
    assert sorted(p.name for p in (warm / "short").iterdir()) == ["c1", "c2"]
    man = read(warm / "short" / "c1" / "manifest.json")
    assert man["campaign"]["name"] == "main-warmup" and man["workload"]["seed"] != 0


def test_hook_runs_between_scenarios_only(swept):
    # Not before the first sweep, not between the warm-up and its sweep, not for a skipped scenario.
    assert swept["hook_log"].read_text().splitlines() == ["long main vllm-cpu"]


def test_report_and_plot_read_the_campaign(swept, capsys):
    camp = swept["results"] / "main"
    assert main(["report", str(camp), "--markdown", str(camp / "report.md"), "--csv", str(camp / "report.csv")]) == 0
    out = capsys.readouterr().out
    assert all(s in out for s in ("short", "long", "r20-c2"))
    rows = list(csv.DictReader((camp / "report.csv").open()))
    assert sorted((r["scenario"], r["load_point"]) for r in rows) == sorted(
        (s, lp) for s, loads in POINTS.items() for lp in loads
    )  # the warm-up is not in the report
    for r in rows:
        summary = read(camp / "vllm-cpu" / r["scenario"] / r["load_point"] / "summary.json")
        assert float(r["output_throughput"]) == pytest.approx(summary["output_throughput"])
    assert "r20-c2" in (camp / "report.md").read_text()

    assert main(["plot", str(camp)]) == 0
    pngs = [p.relative_to(camp) for p in camp.rglob("*.png")]
    for scenario, loads in POINTS.items():
        assert any(p.name.startswith(scenario) for p in pngs), f"no plot for {scenario}: {pngs}"
        for load in loads:
            assert any(p.parent == Path("vllm-cpu", scenario, load) for p in pngs)


def test_resume_keeps_finished_points_and_measures_the_rest_again(cpu_engine, tmp_path, capsys):
    (tmp_path / "set.toml").write_text(SET.replace("concurrency = [1, 2]", "concurrency = [1, 2, 4]", 1))
    args = [
        "campaign",
        str(tmp_path / "set.toml"),
        "--base-url",
        cpu_engine["base_url"],
        "--name",
        "again",
        "--results",
        str(tmp_path),
        "--pause",
        "0",
        "--skip",
        "lo*",
    ]
    assert main(args) == 0
    short = tmp_path / "again" / "vllm-cpu" / "short"
    assert not (tmp_path / "again" / "vllm-cpu" / "long").exists()
    kept = (short / "c1" / "summary.json").read_text()
    interrupted = read(short / "c2" / "summary.json") | {"partial": True}
    (short / "c2" / "summary.json").write_text(json.dumps(interrupted))
    (short / "c4" / "summary.json").unlink()  # a run that died before its summary
    capsys.readouterr()

    assert main(args) == 0
    out = capsys.readouterr().out
    assert "long           skipped: --skip lo*" in out
    assert "short c1: finished earlier, kept" in out
    assert "partial run moved to c2.aside-1" in out and "failed run moved to c4.aside-1" in out
    assert "2 measured, 0 failed" in out
    assert (short / "c1" / "summary.json").read_text() == kept
    assert read(short / "c2.aside-1" / "summary.json")["partial"] is True  # set aside, never deleted
    assert not (short / "c4.aside-1" / "summary.json").exists()
    for load in ("c2", "c4"):
        assert read(short / load / "summary.json")["partial"] is False

    assert main(args + ["--dry-run"]) == 0
    assert "0 to measure" in capsys.readouterr().out


@pytest.mark.parametrize(
    "text, message",
    [
        ("[[scenario]]\nname = 'x'\ninput_len = 8\noutput_len = [", "cannot read scenario file"),
        ("concurrency = [1]\n", "has no [[scenario]] tables"),
        ("[[scenario]]\nname = 'x'\ninput_len = 8\noutput_len = 8\nconcurency = [1]\n", "unknown key(s) concurency"),
        ("[[scenario]]\nname = 'x'\ninput_len = 8\nconcurrency = [1]\n", "need input_len and output_len"),
        ("[[scenario]]\nname = 'x y'\ninput_len = 8\noutput_len = 8\nconcurrency = [1]\n", "needs a name"),
        ("[[scenario]]\nname = 'x'\ndataset = 'sharegpt'\nrates = [10]\n", "pass --dataset-path FILE"),
    ],
)
def test_bad_scenario_files_are_one_sentence_errors(tmp_path, capsys, text, message):
    (tmp_path / "bad.toml").write_text(text)
    assert main(["campaign", str(tmp_path / "bad.toml"), "--label", "x", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bench campaign: ") and message in err and "Traceback" not in err


def test_unknown_set_lists_the_known_ones(capsys):
    assert main(["campaign", "nosuchset", "--label", "x", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "unknown scenario set 'nosuchset'" in err and all(s in err for s in ("demo", "industry", "seed"))


def test_shipped_sets_parse(capsys):
    for name in ("demo", "industry", "seed"):
        extra = ["--skip", "sharegpt"] if name == "seed" else []
        assert main(["campaign", name, "--label", "trt-tp8", "--dry-run", *extra]) == 0
    out = capsys.readouterr().out
    assert "30000-100      skipped: the scenario's skip list has 'trt*'" in out
    assert "256-128        256 in / 128 out, points c1 c2 c4 c8 c16 c32 c64" in out


def test_run_args_cannot_override_what_the_campaign_sets(capsys):
    assert main(["campaign", "demo", "--label", "x", "--dry-run", "--run-args=--concurrency 3"]) == 2
    assert "--run-args cannot set --concurrency" in capsys.readouterr().err
