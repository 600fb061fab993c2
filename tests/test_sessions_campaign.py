"""A scenario set naming a session workload and a Mooncake trace, run by `bench campaign` against
the calibration server; `bench report` shows the per-turn table and `bench plot` draws per-turn.png.
Also the shipped sessions set plans, and what a bad session or trace scenario says."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bench.cli import main
from bench.lab.calibration import start_server, stop_server

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER = str(ROOT / "recipes" / "models" / "tiny-llama")
TRACE = ROOT / "tests" / "data" / "mooncake-small.jsonl"

SET = f"""
num_prompts = 3

[[scenario]]
name = "chat"
dataset = "sessions"
input_len = 12
output_len = 4
turns = "3"
think_time = "0.01"
concurrency = [2]

[[scenario]]
name = "trace"
dataset = "mooncake"
dataset_path = "{TRACE}"
time_scale = 0.5
num_prompts = 8
"""


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sessions-campaign")
    (tmp / "set.toml").write_text(SET)
    server = start_server(0, log=tmp / "calib.jsonl", ttft_ms=3, itl_ms=2)
    try:
        rc = main(
            ["campaign", str(tmp / "set.toml"), "--base-url", f"{server.base_url}/v1", "--label", "calib"]
            + ["--name", "s", "--results", str(tmp / "results"), "--pause", "0", f"--run-args=--tokenizer {TOKENIZER}"]
        )
    finally:
        stop_server(server)
    return rc, tmp / "results" / "s"


def test_a_campaign_runs_session_and_trace_scenarios(campaign):
    rc, camp = campaign
    assert rc == 0
    chat = json.loads((camp / "calib" / "chat" / "c2" / "summary.json").read_text())
    assert chat["conversations"] == 3 and [t["turn"] for t in chat["per_turn"]] == [0, 1, 2]
    assert [t["mean_prompt_tokens"] for t in chat["per_turn"]] == [12, 28, 44]  # user 12 + answer 4 per turn
    trace = camp / "calib" / "trace" / "replay-x0.5"
    man = json.loads((trace / "manifest.json").read_text())
    assert man["workload"]["trace_requests"] == 8 and man["load"]["time_scale"] == 0.5
    assert man["campaign"]["load_point"] == "replay-x0.5"


def test_report_and_plot_show_latency_per_turn(campaign, capsys):
    _, camp = campaign
    capsys.readouterr()
    assert main(["report", str(camp)]) == 0
    out = capsys.readouterr().out
    assert "Per turn of the session runs" in out
    rows = [line.split() for line in out.splitlines() if line.startswith("chat ")]
    assert [row[3] for row in rows[-3:]] == ["0", "1", "2"] and all(row[4] == "3/3" for row in rows[-3:])
    assert main(["plot", str(camp)]) == 0
    assert (camp / "calib" / "chat" / "c2" / "per-turn.png").stat().st_size > 10_000
    assert not (camp / "calib" / "trace" / "replay-x0.5" / "per-turn.png").exists()


def test_the_shipped_sessions_set_plans(capsys, monkeypatch):
    monkeypatch.setenv("SHAREGPT", str(ROOT / "tests" / "data" / "sharegpt-sessions.json"))
    monkeypatch.setenv("MOONCAKE_TRACE", str(TRACE))
    assert main(["campaign", "sessions", "--dry-run", "--label", "x"]) == 0
    out = capsys.readouterr().out
    assert "chat-256-128" in out and "mooncake       mooncake, points replay-x1" in out


@pytest.mark.parametrize(
    "text, says",
    [
        ("[[scenario]]\nname='x'\ndataset='sessions'\nconcurrency=[1]\n", "synthetic sessions need input_len"),
        ("[[scenario]]\nname='x'\ndataset='mooncake'\nrates=[2]\n", "a trace sets its own times"),
        ("[[scenario]]\nname='x'\ndataset='nope'\nconcurrency=[1]\n", "dataset must be one of"),
        (
            "[[scenario]]\nname='x'\ndataset='sessions'\ninput_len=8\noutput_len=8\nturns='a'\nconcurrency=[1]\n",
            "turns and think_time must be",
        ),  # fmt: skip
    ],
)
def test_bad_session_scenarios_say_what_is_wrong(tmp_path, capsys, text, says):
    (tmp_path / "bad.toml").write_text(text)
    assert main(["campaign", str(tmp_path / "bad.toml"), "--label", "x", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err
    assert os.path.exists(tmp_path / "bad.toml")


def test_the_fit_check_sees_a_sessions_last_turn():
    from bench.results.fitset import load
    from bench.results.scenarios import Scenario, points

    s = Scenario("chat", 100, 20, dataset="sessions", turns="2:4", concurrency=[8])
    assert load(points(s, Path("/tmp"))[0])[2:6] == (8, True, 4 * 100 + 3 * 20, 4 * 120)
    unbounded = Scenario("chat", 100, 20, dataset="sessions", turns="exp:3", concurrency=[8])
    assert load(points(unbounded, Path("/tmp"))[0])[4:6] == (None, None)
