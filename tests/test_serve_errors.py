"""The server-side command lines end bad input the one way: `<prog>: <sentence>` on stderr, exit 2, no
traceback. Each is called in-process, as a recipe would run it."""

from __future__ import annotations

import socket

import pytest

from bench import paths
from bench.errors import UserError
from bench.lab import calibration
from bench.serve import guards, hello, launcher, serverinfo


def one_error(capsys, prog: str) -> str:
    """The sentence after `prog: `, checking it is the only line on stderr."""
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith(f"{prog}: ") and err.count("\n") == 1, err
    return err[len(prog) + 2 :].strip()


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(launcher, "RUN_DIR", tmp_path)
    monkeypatch.setattr(paths, "RUN_DIR", tmp_path)
    return tmp_path


@pytest.fixture
def busy_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_launch_error_is_a_user_error():
    assert issubclass(launcher.LaunchError, UserError)  # callers catching LaunchError still do


def test_launcher_stop_of_a_name_not_running(run_dir, capsys):
    assert launcher.main(["stop", "--name", "cpu-engine-1"]) == 2
    assert one_error(capsys, "python -m bench.serve.launcher").startswith("cpu-engine-1 is not running")


def test_launcher_start_without_a_command(run_dir, capsys):
    assert launcher.main(["start", "--name", "x", "--port", "1", "--"]) == 2
    assert one_error(capsys, "python -m bench.serve.launcher") == "no server command given after --"


def test_launcher_start_on_a_busy_port(run_dir, busy_port, capsys):
    assert launcher.main(["start", "--name", "x", "--port", str(busy_port), "--", "true"]) == 2
    assert "already in use" in one_error(capsys, "python -m bench.serve.launcher")


def test_launcher_start_of_a_command_that_does_not_exist(run_dir, capsys):
    port = launcher.free_port()
    assert launcher.main(["start", "--name", "x", "--port", str(port), "--", str(run_dir / "no-such-server")]) == 2
    err = capsys.readouterr().err  # the command line it tried comes first, as for every start
    assert err.startswith("+ ") and "Traceback" not in err
    assert err.splitlines()[1].startswith(f"python -m bench.serve.launcher: cannot run {run_dir / 'no-such-server'}")
    assert not launcher.pid_file("x").exists()


def test_launcher_start_of_a_server_that_exits_names_its_log(run_dir, capsys):
    port = launcher.free_port()
    rc = launcher.main(["start", "--name", "x", "--port", str(port), "--", "sh", "-c", "echo no GPU found; exit 3"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert f"python -m bench.serve.launcher: x exited during start-up with status 3; its log is {run_dir}" in err
    assert err.rstrip().endswith("no GPU found")


def test_serverinfo_write_without_a_command(run_dir, capsys):
    assert serverinfo.main(["write", "--port", "8000", "--engine", "vllm", "--label", "vllm-tp8"]) == 2
    assert one_error(capsys, "python -m bench.serve.serverinfo").startswith("no command given")


def test_serverinfo_write_where_the_record_cannot_go(tmp_path, monkeypatch, capsys):
    (tmp_path / "run").write_text("a file where the folder should be")
    monkeypatch.setattr(paths, "RUN_DIR", tmp_path / "run")
    assert serverinfo.main(["write", "--port", "8000", "--engine", "vllm", "--label", "v", "--", "vllm"]) == 2
    assert one_error(capsys, "python -m bench.serve.serverinfo").startswith("cannot write ")


def test_hello_with_nothing_listening(capsys):
    url = f"http://127.0.0.1:{launcher.free_port()}/v1"
    assert hello.main(["--base-url", url]) == 2
    sentence = one_error(capsys, "python -m bench.serve.hello")
    assert sentence == f"no server answers at {url}; start one with `just cpu-serve`"


def test_guards_with_an_unknown_engine(capsys):
    assert guards.main(["--engine", "tensorrt", "--model", "/m", "--", "trtllm-serve"]) == 2
    assert "known engines are sglang, transformers, trtllm, vllm" in one_error(capsys, "python -m bench.serve.guards")


def test_calibration_server_with_bad_timing(tmp_path, capsys):
    assert calibration.main(["--ttft-ms", "-1", "--log", str(tmp_path / "calib.jsonl")]) == 2
    assert one_error(capsys, "python -m bench.lab.calibration").startswith("--ttft-ms and --itl-ms must be >= 0")
