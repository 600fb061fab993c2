"""A server that lists its models but does not answer a first request in time is named as such."""

from __future__ import annotations

from bench.cli import main
from bench.lab.calibration import read_log, start_server, stop_server
from conftest import ROOT


def test_a_server_up_but_silent_on_its_first_request(tmp_path, capsys):
    log = tmp_path / "calib.jsonl"
    proc = start_server(0, log=log, ttft_ms=1, itl_ms=1, hang_first=1)  # as an engine still warming up
    try:
        argv = ["run", "--base-url", f"{proc.base_url}/v1", "--concurrency", "1", "--num-prompts", "2", "--tokenizer"]
        argv += [str(ROOT / "recipes/models/tiny-llama")]
        status = main(argv + ["--first-token-timeout", "2", "--out", str(tmp_path / "r")])
        err = capsys.readouterr().err
        assert status == 2 and "Traceback" not in err, err
        assert "answers (it lists its models) but gave no answer to a first one-token request within 2 s" in err
        assert "no server answers" not in err
        assert not (tmp_path / "r").exists()  # refused before anything was written

        # The next request is answered: the same command then runs.
        assert main(argv + ["--out", str(tmp_path / "r2"), "--no-progress"]) == 0
    finally:
        stop_server(proc)
    assert [e.get("fault") for e in read_log(log).values()][:1] == ["hang"]
