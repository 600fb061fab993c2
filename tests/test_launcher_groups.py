"""A layout of several processes (prefill/decode disaggregation) starts as one group and stops as one:
each member has its own pid file, the front door's record lists every member's command, and a member
that fails to start takes the ones started before it down with it."""

from __future__ import annotations

import os
import sys

import pytest

from bench import paths
from bench.instrument import served
from bench.serve import launcher
from conftest import free_port, process_group_alive


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(launcher, "RUN_DIR", tmp_path)
    monkeypatch.setattr(paths, "RUN_DIR", tmp_path)
    return tmp_path


def calibration_server(port: int, log) -> list[str]:
    """A real server that answers /health: the calibration server stands in for any member."""
    return [sys.executable, "-m", "bench.lab.calibration", "--port", str(port), "--log", str(log)]


def start(group: str, name: str, port: int, command: list[str], *record: str) -> int:
    argv = ["start", "--group", group, "--name", name, "--port", str(port), "--timeout", "30", *record]
    return launcher.main([*argv, "--", *command])


def test_a_group_starts_member_by_member_and_stops_whole(run_dir, capsys):
    worker, front = free_port(), free_port()
    assert start("pd", "decode", worker, calibration_server(worker, run_dir / "w.jsonl")) == 0
    record = ["--engine", "calibration", "--label", "calib-pd", "--gpus", "8", "--model", "m"]
    assert start("pd", "router", front, calibration_server(front, run_dir / "f.jsonl"), *record) == 0
    pids = [int((run_dir / f"pd.{m}.pid").read_text()) for m in ("decode", "router")]
    assert launcher.members("pd") == ["pd.decode", "pd.router"]
    info = served.read(front)
    assert info["label"] == "calib-pd" and info["gpus"] == 8 and info["pid"] == pids[1]
    lines = info["command"].splitlines()  # every member's command line, in start order
    assert [line.split(":")[0] for line in lines] == ["pd.decode", "pd.router"] and f"--port {worker}" in lines[0]

    assert launcher.main(["stop", "--group", "pd"]) == 0
    err = capsys.readouterr().err
    assert err.index("pd.router stopped") < err.index("pd.decode stopped")  # the front door first
    assert not any(map(process_group_alive, pids)) and not (run_dir / "pd.commands").exists()
    assert served.read(front) is None  # its server is gone, so its record is forgotten
    assert launcher.main(["stop", "--group", "pd"]) == 2  # nothing left to stop: one sentence


def test_a_member_that_fails_stops_the_members_before_it(run_dir, capsys):
    first, second = free_port(), free_port()
    assert start("pd", "prefill", first, calibration_server(first, run_dir / "p.jsonl")) == 0
    pid = int((run_dir / "pd.prefill.pid").read_text())
    dies = [sys.executable, "-c", "raise SystemExit(3)"]
    assert start("pd", "decode", second, dies) == 2
    err = capsys.readouterr().err
    assert "pd.decode exited during start-up with status 3" in err and "stopping the rest of group pd" in err
    assert not process_group_alive(pid) and not list(run_dir.glob("*.pid"))
    assert not os.path.exists(run_dir / "pd.commands")
