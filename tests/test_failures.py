"""What goes wrong is counted, shown and explained: each failure ends as one record with an error kind
from the closed list, the summary's verdict and the exit status say the run failed or was cut short."""

from __future__ import annotations

import asyncio
import csv
import json
import signal
import socket
import subprocess
import sys
import time

import pytest

from bench.cli import main
from bench.instrument.client import RawTransport
from bench.instrument.reader import ResponseReader
from bench.instrument.records import ERROR_KINDS, Record, RecordWriter, read_records
from bench.instrument.runner import Load, Runner
from bench.instrument.workload import Prompt
from bench.lab.calibration import start_server, stop_server
from conftest import ROOT

TOKENIZER = str(ROOT / "recipes" / "models" / "tiny-llama")
HEAD = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
EVENT = b'data: {"choices":[{"index":0,"text":" a"}],"usage":{"prompt_tokens":3,"completion_tokens":1}}\n\n'


def filled(reader: ResponseReader) -> Record:
    rec = Record(id=0, warmup=False, scheduled=0.0, sent=0.0)
    reader.result().fill(rec)
    return rec


def test_a_connection_cut_before_the_stream_finished_is_reset_or_truncated():
    for reset, kind in ((True, "reset"), (False, "truncated")):
        r = ResponseReader("completions")
        r.feed(HEAD + b"%x\r\n%s\r\n" % (len(EVENT), EVENT), 1.0)
        r.connection_closed(reset)
        rec = filled(r)
        assert rec.error_kind == kind and rec.chunk_times == [1.0]  # what arrived is kept


def test_no_byte_of_a_response_is_server_gone():
    r = ResponseReader("completions")
    r.connection_closed()
    assert filled(r).error_kind == "server_gone"


def test_a_finished_stream_without_text_is_truncated():
    r = ResponseReader("completions")
    r.feed(HEAD + b"%x\r\n%s\r\n0\r\n\r\n" % (len(b"data: [DONE]\n\n"), b"data: [DONE]\n\n"), 1.0)
    assert filled(r).error_kind == "truncated"


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory):
    """First chunk after 400 ms, then one every 50 ms."""
    proc = start_server(0, log=tmp_path_factory.mktemp("slow") / "log.jsonl", ttft_ms=400, itl_ms=50)
    yield f"{proc.base_url}/v1"
    stop_server(proc)


def run(base_url: str, out, *extra: str) -> int:
    argv = ["run", "--base-url", base_url, "--tokenizer", TOKENIZER, "--out", str(out), "--no-progress"]
    return main([*argv, "--concurrency", "2", "--num-prompts", "4", "--input-len", "16", "--output-len", "4", *extra])


def summary_of(out) -> dict:
    return json.loads((out / "summary.json").read_text())


@pytest.mark.parametrize(
    "flags,kind",
    [(["--first-token-timeout", "0.1"], "timeout_first_token"), (["--request-timeout", "0.2"], "timeout_total")],
)
def test_timeouts_are_told_apart_and_fail_the_run(slow_server, tmp_path, capsys, flags, kind):
    assert run(slow_server, tmp_path / "r", *flags) == 1
    recs = list(read_records(tmp_path / "r" / "requests.jsonl"))
    assert len(recs) == 4 and {r.error_kind for r in recs} == {kind}
    s = summary_of(tmp_path / "r")
    assert s["failed"] == 4 and s["completed"] == 0 and s["success_rate"] == 0.0
    assert s["verdict"]["status"] == "failed" and "no request completed" in s["verdict"]["reasons"][0]
    assert f"run failed: no request completed ({kind} 4)" in capsys.readouterr().err


def test_a_server_that_never_accepts_is_timeout_connect(tmp_path):
    """The runner and the raw transport against a listener that accepts nothing: once its backlog is
    full the kernel drops new handshakes, so connecting hangs until the connect timeout."""

    async def go(port: int) -> None:
        transport = RawTransport(f"http://127.0.0.1:{port}/v1", "completions", {}, connect_timeout=0.3)
        writer = RecordWriter(tmp_path / "requests.jsonl")
        runner = Runner(transport, writer, lambda prompt: {"prompt": prompt.text}, 0.0, show_progress=False)
        await runner.run([], [Prompt("a b", 2, 2)], Load(1, None, None, None, 10.0))
        await transport.close()
        runner.write_ended()
        writer.close()

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        try:
            for _ in range(4):  # fill the backlog; a handshake that hangs here means it is full
                s = socket.socket()
                s.settimeout(0.2)
                try:
                    s.connect(("127.0.0.1", port))
                    fillers.append(s)
                except TimeoutError:
                    s.close()
                    break
            asyncio.run(go(port))
        finally:
            for s in fillers:
                s.close()
    recs = list(read_records(tmp_path / "requests.jsonl"))
    assert [r.error_kind for r in recs] == ["timeout_connect"] and "within 0.3 s" in recs[0].error


def test_every_kind_in_the_list_is_explained():
    assert all(text and not text.endswith(".") for text in ERROR_KINDS.values())
    assert set(ERROR_KINDS) == {
        "http_429",
        "http_4xx",
        "http_5xx",
        "reset",
        "server_gone",
        "timeout_connect",
        "timeout_first_token",
        "timeout_total",
        "malformed",
        "truncated",
        "interrupted",
    }


@pytest.mark.parametrize("sig,status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_leaves_a_partial_summary_and_exit_128_plus_it(slow_server, tmp_path, sig, status):
    out = tmp_path / "r"
    cmd = [sys.executable, "-m", "bench", "run", "--base-url", slow_server, "--tokenizer", TOKENIZER]
    cmd += ["--out", str(out), "--no-progress", "--concurrency", "2", "--num-prompts", "200"]
    cmd += ["--input-len", "16", "--output-len", "4"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    records = out / "requests.jsonl"
    deadline = time.monotonic() + 60
    while not (records.exists() and len(records.read_text().splitlines()) >= 2):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)  # polling a file for a condition, not timing the test
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == status, err
    s = summary_of(out)
    assert s["partial"] is True and s["verdict"]["status"] == "partial" and s["interrupted"] >= 1
    assert s["failed"] == 0  # requests the run cut short are not the server's failures
    assert "run partial: the run was interrupted" in err


def test_the_server_exiting_mid_run_ends_the_run_with_server_gone_records(tmp_path):
    log = tmp_path / "server.jsonl"
    server = start_server(0, log=log, ttft_ms=5, itl_ms=20)
    out = tmp_path / "r"
    cmd = [sys.executable, "-m", "bench", "run", "--base-url", f"{server.base_url}/v1", "--tokenizer", TOKENIZER]
    cmd += ["--out", str(out), "--no-progress", "--concurrency", "4", "--num-prompts", "400"]
    cmd += ["--input-len", "16", "--output-len", "8", "--request-timeout", "30"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    records = out / "requests.jsonl"
    deadline = time.monotonic() + 60
    try:
        while not (records.exists() and len(records.read_text().splitlines()) >= 8):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)  # polling a file for a condition, not timing the test
    finally:
        server.kill()  # gone at once, mid-stream, as a crashed engine
        stop_server(server)
    _, err = proc.communicate(timeout=60)  # well within the request timeout
    assert proc.returncode == 1, err
    recs = list(read_records(records))
    assert len(recs) == 400 and len({r.id for r in recs}) == 400  # every request ends as one record
    kinds = {r.error_kind for r in recs if not r.ok}
    assert "server_gone" in kinds and kinds <= {"server_gone", "reset", "truncated"}
    assert summary_of(out)["verdict"]["status"] == "failed"


def test_the_api_key_is_in_no_file_and_no_output_and_the_tokenizer_is_recorded(
    slow_server, tmp_path, monkeypatch, capsys
):
    key = "sk-test-0123456789abcdef"
    monkeypatch.setenv("OPENAI_API_KEY", key)
    out = tmp_path / "r"
    assert run(slow_server.replace("http://", f"http://user:{key}@"), out, "--extra-body", '{"user": "x"}') == 0
    captured = capsys.readouterr()
    assert key not in captured.out + captured.err
    for f in out.iterdir():
        assert key not in f.read_text(), f.name
    man = json.loads((out / "manifest.json").read_text())
    assert "--tokenizer" in man["command"] and TOKENIZER in man["command"]  # a tokenizer is not a secret
    tok = man["workload"]["tokenizer"]
    assert tok["path"].endswith("tiny-llama/tokenizer.json") and len(tok["sha256"]) == 64


def test_redaction_is_by_name_not_by_substring():
    from bench.instrument.manifest import redact, redact_text

    argv = ["x", "--max-tokens", "5", "--api-key", "abc", "--hf-token=hf_abcdefghij", "--tokenizer", "/t"]
    assert redact(argv) == [
        "x",
        "--max-tokens",
        "5",
        "--api-key",
        "<redacted>",
        "--hf-token=<redacted>",
        "--tokenizer",
        "/t",
    ]
    assert redact_text("vllm serve m --api-key s3cret -tp 8") == "vllm serve m --api-key <redacted> -tp 8"
    assert redact_text("http://u:p@h:1/v1?token=abc&x=1") == "http://<redacted>@h:1/v1?token=<redacted>&x=1"


def test_kill_9_then_summarize_and_report_give_a_partial_row(slow_server, tmp_path, capsys):
    out = tmp_path / "camp" / "calib" / "16-4" / "c2"
    cmd = [
        sys.executable,
        "-m",
        "bench",
        "run",
        "--base-url",
        slow_server,
        "--tokenizer",
        TOKENIZER,
        "--label",
        "calib",
    ]
    cmd += ["--out", str(out), "--no-progress", "--concurrency", "2", "--num-prompts", "200"]
    cmd += ["--input-len", "16", "--output-len", "4", "--campaign", "camp", "--scenario", "16-4"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    records = out / "requests.jsonl"
    deadline = time.monotonic() + 60
    while not (records.exists() and len(records.read_text().splitlines()) >= 4):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)  # polling a file for a condition, not timing the test
    proc.kill()
    proc.wait()
    assert not (out / "summary.json").exists()
    # Before: the report names the folder it skipped and why, and finds nothing else.
    assert main(["report", str(tmp_path / "camp")]) == 2
    err = capsys.readouterr().err
    assert f"skipped {out}: no summary.json" in err and f"bench summarize {out}" in err
    done = len(list(read_records(records)))
    assert main(["summarize", str(out)]) == 0
    s = summary_of(out)
    assert s["partial"] is True and s["completed"] == done and s["verdict"]["status"] == "partial"
    assert "rebuilt" in s and s["client_cpu_s"] is None
    assert main(["summarize", str(out)]) == 2  # nothing is overwritten without --force
    capsys.readouterr()
    assert main(["report", str(tmp_path / "camp")]) == 0
    table = capsys.readouterr().out
    assert "calib †" in table and "† calib 16-4 c2: partial: the run was interrupted" in table
    assert main(["summarize", "--force", str(out)]) == 0 and (out / "summary.json.before-1").exists()


def test_a_broken_summary_is_skipped_and_the_rest_reported(slow_server, tmp_path, capsys):
    for name in ("a", "b"):
        assert run(slow_server, tmp_path / name, "--label", name) == 0
    (tmp_path / "b" / "summary.json").write_text("{not json")
    assert main(["report", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert f"skipped {tmp_path / 'b'}: cannot read" in captured.err and " a " in captured.out
    assert main(["plot", str(tmp_path)]) == 0


def test_failed_and_lossy_runs_are_marked_and_left_off_the_frontier(slow_server, tmp_path, capsys):
    assert run(slow_server, tmp_path / "ok" / "c2", "--label", "ok") == 0
    assert run(slow_server, tmp_path / "bad" / "c2", "--label", "bad", "--first-token-timeout", "0.1") == 1
    assert main(["report", str(tmp_path), "--csv", str(tmp_path / "r.csv")]) == 0
    out = capsys.readouterr().out
    assert "bad ✗" in out and "✗ bad 16-4 c2: failed: no request completed (timeout_first_token 4)" in out
    rows = {r["engine"]: r for r in csv.DictReader(open(tmp_path / "r.csv"))}
    assert rows["bad"]["flag"] == "✗" and rows["ok"]["flag"] == ""
    from bench.results import plot, runfolder

    series = plot.scenario_series(runfolder.find_runs(tmp_path))
    (pts,) = [s["bad"] for s in series.values() if "bad" in s]
    assert pts[0]["flag"] == "✗" and pts[0]["load_point"] == "c2 ✗"
    pts[0]["interactivity"] = pts[0]["output_throughput"] = 1.0  # a failed run's numbers, made tempting
    assert plot.frontier(pts, "output_throughput") == []
    assert plot.frontier(pts, "output_throughput", include_flagged=True) == pts
