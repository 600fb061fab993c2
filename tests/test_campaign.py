"""`bench campaign` against the real CPU engine: one folder per point, resume, skips, hook, warm-up,
and the report and plots of the result; its `just bench` spelling (key=value words, --report, the
recipe itself) against the calibration server, which is quicker; plus the errors that need no server."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.cli import main
from bench.lab.calibration import start_server, stop_server
from conftest import JUST, ROOT

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
    assert "256-128        256 in / 128 out, points c1 c4 c16 c64" in out


def test_run_args_cannot_override_what_the_campaign_sets(capsys):
    assert main(["campaign", "demo", "--label", "x", "--dry-run", "--run-args=--concurrency 3"]) == 2
    assert "--run-args cannot set --concurrency" in capsys.readouterr().err


# The `just bench` spelling, against the calibration server (it serves any prompt at known speed).
QUICK = """
num_prompts = 4
input_len = 16
output_len = 4

[[scenario]]
name = "short"
concurrency = [1, 2]

[[scenario]]
name = "other"
concurrency = [1]
"""
TOKENIZER = str(ROOT / "recipes" / "models" / "tiny-llama")  # the calibration model has none of its own
KEYS = "model= engine= scenarios= url= campaign= sharegpt="


@pytest.fixture(scope="module")
def calibration(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("calibration")
    (tmp / "quick.toml").write_text(QUICK)
    server = start_server(0, log=tmp / "server.jsonl", ttft_ms=5, itl_ms=2)
    yield {"base_url": f"{server.base_url}/v1", "set": tmp / "quick.toml"}
    stop_server(server)


def words_campaign(calibration, results: Path, *words: str, run_args: str = "") -> int:
    """A campaign spelled as `just bench` spells it: the recipe's flags, then key=value words."""
    return main(
        [
            "campaign",
            f"--results={results}",
            "--pause=0",
            f"--run-args=--tokenizer {TOKENIZER} {run_args}",
            f"url={calibration['base_url']}",
            f"scenarios={calibration['set']}",
            "engine=calib",
            *words,
        ]
    )


def assert_report_and_plots(camp: Path, loads: dict[str, list[str]]) -> None:
    rows = list(csv.DictReader((camp / "report.csv").open()))
    assert sorted((r["scenario"], r["load_point"]) for r in rows) == sorted(
        (s, lp) for s, lps in loads.items() for lp in lps
    )
    assert "| Scenario" in (camp / "report.md").read_text()
    pngs = {p.relative_to(camp) for p in camp.rglob("*.png")}
    for scenario, lps in loads.items():
        assert {Path(f"{scenario}-throughput-latency.png"), Path(f"{scenario}-frontier.png")} <= pngs
        assert {Path("calib", scenario, lp, "cdf-ttft-itl.png") for lp in lps} <= pngs


def test_words_name_the_campaign_after_the_model_and_report_ends_it(calibration, tmp_path, capsys):
    assert words_campaign(calibration, tmp_path, "model=calibration", "--report") == 0
    out = capsys.readouterr().out
    camp = tmp_path / "quick-calibration"  # <set>-<model basename>, as `just bench` always named it
    for scenario, loads in {"short": ["c1", "c2"], "other": ["c1"]}.items():
        for load in loads:
            man = read(camp / "calib" / scenario / load / "manifest.json")
            assert man["server"]["label"] == "calib" and man["server"]["model"] == "calibration"
            assert man["server"]["base_url"] == calibration["base_url"]
            assert man["campaign"]["name"] == "quick-calibration"
    assert "Output tok/s by engine" in out  # the tables, as `just report` printed them
    assert_report_and_plots(camp, {"short": ["c1", "c2"], "other": ["c1"]})


def test_failed_points_still_get_their_report_and_plots(calibration, tmp_path, capsys):
    # Every request outlives its timeout: each point is measured but fails, and the campaign exits 1.
    slow = """--request-timeout 0.05 --extra-body '{"calibration": {"ttft_ms": 500}}'"""
    assert words_campaign(calibration, tmp_path, "campaign=slow", "--report", "--skip=other", run_args=slow) == 1
    assert "failed: short/c1 short/c2" in capsys.readouterr().out
    assert_report_and_plots(tmp_path / "slow", {"short": ["c1", "c2"]})


def test_flags_win_over_words_and_later_words_over_earlier_ones(capsys):
    args = ["campaign", "--dry-run", "engine=a", "url=http://h:1/v1", "model=m1", "model=/x/m2", "demo"]
    assert main(args) == 0
    assert "campaign demo-m2: demo.toml against a at http://h:1/v1" in capsys.readouterr().out
    assert main([*args, "--label", "b", "--name", "mine", "scenarios=industry", "url="]) == 0
    # an empty word unsets: the default URL again
    assert "campaign mine: demo.toml against b at http://127.0.0.1:8000/v1" in capsys.readouterr().out
    assert main(["campaign", "demo", "--dry-run", "engine=a", "--model", "m"]) == 0
    assert "campaign demo: " in capsys.readouterr().out  # no model= word: the set's name, as before


@pytest.mark.parametrize("word", ["modle=x", "Model=x", "industry"])
def test_unknown_word_is_one_sentence_naming_the_keys(capsys, word):
    assert main(["campaign", "demo", "--label", "x", "--dry-run", word]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"bench campaign: unknown argument {word!r}") and KEYS in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_a_set_is_needed(capsys):
    assert main(["campaign", "--label", "x", "--dry-run", "model=m"]) == 2
    assert "no scenario set: give one as SET or scenarios=NAME" in capsys.readouterr().err


def just_bench(calibration, results: Path, *words: str, **env_extra: str) -> subprocess.CompletedProcess:
    """`just bench` itself against the calibration server, with MODEL, SHAREGPT and the hook unset."""
    env = {**os.environ, "RESULTS": str(results), "BENCH_PAUSE": "0", **env_extra}
    for name in ("MODEL", "SHAREGPT", *(n for n in ("BENCH_HOOK",) if n not in env_extra)):
        env.pop(name, None)
    argv = [JUST, "--justfile", str(ROOT / "justfile"), "bench", f"url={calibration['base_url']}", "engine=calib"]
    argv += [f"scenarios={calibration['set']}", f"--run-args=--tokenizer {TOKENIZER}", *words]
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_just_bench_calls_the_campaign_with_the_recipes_defaults(calibration, tmp_path):
    hook_log = tmp_path / "hook.log"
    done = just_bench(calibration, tmp_path, "model=calibration", BENCH_HOOK=f"echo $BENCH_SCENARIO >> {hook_log}")
    assert done.returncode == 0, done.stderr
    assert "Output tok/s by engine" in done.stdout
    assert hook_log.read_text().split() == ["other"]  # BENCH_HOOK reached the campaign
    assert_report_and_plots(tmp_path / "quick-calibration", {"short": ["c1", "c2"], "other": ["c1"]})


def test_ctrl_c_stops_the_point_in_process_and_keeps_it_partial(calibration, tmp_path):
    """Points are measured in the campaign's own process: Ctrl-C reaches the run, which keeps what it
    measured as a partial point, and the campaign stops there with 130."""
    slow = """--extra-body '{"calibration": {"itl_ms": 1000}}'"""  # 4 requests of 3 s one after the other
    cmd = [sys.executable, "-m", "bench", "campaign", f"--results={tmp_path}", "--pause=0", "--name=cut"]
    cmd += [f"--run-args=--tokenizer {TOKENIZER} {slow}", f"url={calibration['base_url']}", "engine=calib"]
    cmd += [f"scenarios={calibration['set']}", "--skip=other"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    records = tmp_path / "cut" / "calib" / "short" / "c1" / "requests.jsonl"
    deadline = time.monotonic() + 60
    while not (records.exists() and records.read_text().strip()):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)  # polling a file for a condition, not timing the test
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "short c1: interrupted; run the same command again to resume" in out
    assert read(records.parent / "summary.json")["partial"] is True
    assert not (records.parent.parent / "c2").exists()  # stopped there, not carried on


def test_a_self_check_in_run_args_is_kept_in_each_points_manifest(calibration, tmp_path, capsys):
    assert words_campaign(calibration, tmp_path, "campaign=checked", "--skip=other", run_args="--self-check") == 0
    assert capsys.readouterr().err.count("self-check at concurrency") == 2  # said once per point
    for load, c in (("c1", 1), ("c2", 2)):
        check = read(tmp_path / "checked" / "calib" / "short" / load / "manifest.json")["self_check"]
        assert check["ok"] and check["concurrency"] == c and abs(check["ttft_mean_error_ms"]) < 5


def test_just_bench_without_a_model_uses_the_servers_only_one_and_names_the_campaign_after_it(calibration, tmp_path):
    done = just_bench(calibration, tmp_path, "--skip=other")
    assert done.returncode == 0, done.stderr
    assert "model: calibration, the only one the server serves" in done.stdout
    assert (tmp_path / "quick-calibration" / "calib" / "short" / "c1" / "summary.json").is_file()
