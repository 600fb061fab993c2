"""SLO search and adaptive points on a calibration server that slows with load along a known line:
TTFT = 20 ms + 40 ms per other stream in flight, so a closed loop at concurrency C has TTFT
20 + 40 (C - 1) ms, and TTFT p99 <= 640 ms holds up to C = 16 (620 ms) and no further (660 ms).
The 20 ms on either side leave room for a loaded host's lateness."""

from __future__ import annotations

import json

import pytest

from bench.cli import main
from bench.lab.calibration import start_server, stop_server
from bench.paths import ROOT
from bench.serve.launcher import free_port

TOKENIZER = str(ROOT / "recipes" / "models" / "tiny-llama")  # the calibration model has none of its own
SET = """
input_len = 16
output_len = 8
num_prompts = 8
prompts_per_concurrency = 2

[[scenario]]
name = "slow"
concurrency = [1, 2, 4, 8, 16, 32]
"""
SLO = "ttft_p99=640,tpot_p99=40"


@pytest.fixture(scope="module")
def slowing(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("slowing")
    (tmp / "set.toml").write_text(SET)
    server = start_server(
        free_port(), log=tmp / "server.jsonl", ttft_ms=20, itl_ms=2, ttft_per_stream_ms=40, itl_per_stream_ms=0.5
    )
    yield {"base_url": f"{server.base_url}/v1", "set": tmp / "set.toml", "tmp": tmp}
    stop_server(server)


def campaign(slowing, name: str, *flags: str) -> int:
    return main(
        [
            "campaign",
            str(slowing["set"]),
            "--base-url",
            slowing["base_url"],
            "--label",
            "calib",
            "--name",
            name,
            "--results",
            str(slowing["tmp"] / "results"),
            "--pause",
            "0",
            f"--run-args=--tokenizer {TOKENIZER} --scrape-interval 0 --no-progress",
            *flags,
        ]
    )


@pytest.mark.slow
def test_bisection_finds_the_known_threshold(slowing):
    assert campaign(slowing, "adaptive", "--points", "adaptive", "--slo", SLO, "--slo-resolution", "0") == 0
    folder = slowing["tmp"] / "results" / "adaptive" / "calib" / "slow"
    answer = json.loads((folder / "slo.json").read_text())
    assert answer["range"] == [16, 17], answer
    assert answer["bounded_by"] == {"meets": "c16", "misses": "c17"}
    assert answer["goodput_req_s"] > 0
    log = json.loads((folder / "points.json").read_text())["points"]
    reasons = [e["why"] for e in log if "why" in e]
    assert reasons[:2] == ["lowest load of the grid", "highest load of the grid"]
    assert any(r.startswith("SLO bisection") for r in reasons)
    assert (folder / "points.md").read_text().count("| c") == len(reasons)
    # The report says the answer and gives each point's interval; the frontier plot is drawn with them.
    camp = slowing["tmp"] / "results" / "adaptive"
    assert main(["report", str(camp), "--markdown", str(camp / "report.md")]) == 0
    md = (camp / "report.md").read_text()
    assert "calib/slow: c16 meets ttft_p99 <= 640 ms, tpot_p99 <= 40 ms, c17 does not" in md
    assert "tok/s +-" in md
    assert main(["plot", str(camp)]) == 0
    assert (camp / "slow-frontier.png").stat().st_size > 0
    # Every point it measured holds the requests it said it used, each one complete.
    for e in log:
        if "why" in e:
            lines = (folder / e["point"] / "requests.jsonl").read_text().splitlines()
            assert len(lines) == e["requests"]


@pytest.mark.slow
def test_the_grid_brackets_the_threshold_between_its_points(slowing):
    assert campaign(slowing, "grid", "--slo", SLO) == 0
    answer = json.loads((slowing["tmp"] / "results" / "grid" / "calib" / "slow" / "slo.json").read_text())
    assert answer["range"] == [16, 32] and answer["mode"] == "grid"


def test_a_malformed_slo_is_refused_in_one_sentence(slowing, capsys):
    assert campaign(slowing, "bad", "--slo", "ttft=5") == 2
    assert "--slo 'ttft=5' is not NAME=MS" in capsys.readouterr().err
