"""The calibration server's injected faults, each met by the client with the right error kind; and
the soak: 20,000 requests with 1 % failing in each way, every one accounted for."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from bench.cli import main
from bench.instrument.records import read_records
from bench.lab.calibration import read_log, start_server, stop_server
from bench.lab.calibration_faults import FAULTS, Faults, parse_shares
from conftest import ROOT

TOKENIZER = str(ROOT / "recipes" / "models" / "tiny-llama")
# Short limits, so stalls and hangs end quickly: first token due after 5 ms, a stream of 8 x 5 ms.
LIMITS = ["--first-token-timeout", "0.5", "--request-timeout", "1.5"]


def run(base_url: str, out, n: int, c: int, *extra: str) -> int:
    argv = ["run", "--base-url", base_url, "--tokenizer", TOKENIZER, "--out", str(out), "--no-progress"]
    argv += ["--concurrency", str(c), "--num-prompts", str(n), "--input-len", "16", "--output-len", "8"]
    return main([*argv, *LIMITS, *extra])


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_each_fault_is_recorded_as_its_kind(tmp_path, fault):
    log = tmp_path / "server.jsonl"
    server = start_server(0, log=log, ttft_ms=5, itl_ms=5, faults=f"{fault}=1")
    try:
        assert run(f"{server.base_url}/v1", tmp_path / "r", 4, 2) == 1  # every request failed
    finally:
        stop_server(server)
    recs = list(read_records(tmp_path / "r" / "requests.jsonl"))
    assert [r.error_kind for r in recs] == [FAULTS[fault][1]] * 4, [r.error for r in recs]
    logged = [e for e in read_log(log).values() if e["id"].startswith("bench-")]
    assert len(logged) == 4 and {e["fault"] for e in logged} == {fault}
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["errors_by_kind"] == {FAULTS[fault][1]: 4} and summary["verdict"]["status"] == "failed"


def test_the_server_exits_after_n_requests(tmp_path):
    server = start_server(0, log=tmp_path / "server.jsonl", ttft_ms=5, itl_ms=5, exit_after=10)
    try:
        assert run(f"{server.base_url}/v1", tmp_path / "r", 40, 2) == 1
    finally:
        stop_server(server)
    assert server.returncode == 3
    recs = list(read_records(tmp_path / "r" / "requests.jsonl"))
    assert len(recs) == 40 and sum(r.ok for r in recs) >= 7  # the probe took one of the ten
    assert {r.error_kind for r in recs if not r.ok} <= {"server_gone", "reset", "truncated"}
    assert any(r.error_kind == "server_gone" for r in recs)


def test_fault_shares_are_checked_and_drawn_by_seed():
    assert parse_shares("reset=0.01, http_500=0.02") == {"reset": 0.01, "http_500": 0.02}
    for bad in ("nope=0.1", "reset=x", "reset=2", "reset=0.6,stall=0.6"):
        with pytest.raises(ValueError):
            parse_shares(bad)
    draws = [Faults({"reset": 0.5}, seed=7).pick(None, True) for _ in range(1)]
    assert draws == [Faults({"reset": 0.5}, seed=7).pick(None, True)]
    assert Faults({}, 0).pick("hang", False) == "hang" and Faults({}, 0).pick("nonsense", True) is None


def rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@pytest.mark.slow
def test_soak_20000_requests_with_every_fault_accounts_for_each_request(tmp_path):
    """C=64, 1 % of requests failing in each injected way: one record per scheduled request, each
    failure of the kind the server's log says it caused, the success rate exact, memory flat."""
    n, log = 20_000, tmp_path / "server.jsonl"
    shares = ",".join(f"{f}=0.01" for f in FAULTS)
    server = start_server(0, log=log, ttft_ms=2, itl_ms=1, faults=shares)
    out = tmp_path / "r"
    cmd = [sys.executable, "-m", "bench", "run", "--base-url", f"{server.base_url}/v1", "--tokenizer", TOKENIZER]
    cmd += ["--out", str(out), "--no-progress", "--concurrency", "64", "--num-prompts", str(n)]
    cmd += ["--input-len", "16", "--output-len", "8", "--min-success", "0.5", *LIMITS]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    records, peaks = out / "requests.jsonl", {}
    try:
        while proc.poll() is None:
            done = sum(1 for _ in open(records)) if records.exists() else 0
            rss = rss_mb(proc.pid)
            key = "early" if done < 2_000 else "late"
            if 1_000 <= done < n:  # while sending, past start-up (summarising after is another phase)
                peaks[key] = max(peaks.get(key, 0.0), rss)
            time.sleep(0.2)  # sampling memory while it runs, not synchronising
        _, err = proc.communicate()
    finally:
        stop_server(server)
    assert proc.returncode == 0, err
    recs = {r.id: r for r in read_records(records)}
    assert len(recs) == n  # every scheduled request is one record
    truth = {int(rid.rsplit("-", 1)[1]): e.get("fault") for rid, e in read_log(log).items() if rid.startswith("bench-")}
    wrong = [
        (i, truth.get(i), r.error_kind)
        for i, r in recs.items()
        if (FAULTS[truth[i]][1] if truth.get(i) else "") != r.error_kind
    ]
    assert not wrong, wrong[:10]
    faulted = sum(1 for f in truth.values() if f)
    assert 0.06 < faulted / n < 0.12  # about 1 % in each of the nine ways
    summary = json.loads((out / "summary.json").read_text())
    assert summary["completed"] == n - faulted and summary["success_rate"] == (n - faulted) / n
    assert peaks["late"] < 1.2 * peaks["early"], peaks
