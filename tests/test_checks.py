"""The run checks on hand-made telemetry (server.jsonl lines) and records: each figure and verdict."""

from __future__ import annotations

import re

from bench.instrument.checks import run_checks
from bench.instrument.records import Record


def recs(n: int = 10, prompt: int = 100, out: int = 20) -> list[Record]:
    return [
        Record(
            id=i,
            warmup=False,
            scheduled=0.0,
            sent=0.0,
            first=0.05,
            last=0.5,
            chunk_times=[0.05, 0.5],
            chunk_tokens=[1, out - 1],
            prompt_tokens=prompt,
            completion_tokens=out,
        )
        for i in range(n)
    ]


def scrape(phase: str, t: float, **values) -> dict:
    hist = values.pop("ttft", None)
    line = {"kind": "scrape", "t": t, "phase": phase, "took_ms": 3.0, "values": values, "histograms": {}}
    if hist:
        line["histograms"]["ttft"] = {"sum": hist[0], "count": hist[1], "buckets": []}
    return line


MANIFEST = {"workload": {"input_len": 100, "prefix_len": 0}, "load": {"concurrency": 4, "rate": None}, "gpus": []}
SUMMARY = {"mean_ttft_ms": 50.0, "duration": 10.0, "p99_send_lag_ms": 0.2}


def by_name(checks: list[dict]) -> dict:
    return {c["check"]: c for c in checks}


def test_a_clean_run_passes_every_check():
    server = [
        scrape(
            "before",
            0.0,
            prefix_queries=0,
            prefix_hits=0,
            preemptions=0,
            prompt_tokens=500,
            generation_tokens=90,
            ttft=(1.0, 20),
        )
    ]
    server += [scrape("measure", 1.0 + i, running=4, waiting=0, kv_usage=0.3) for i in range(8)]
    server.append(
        scrape(
            "after",
            10.0,
            prefix_queries=1000,
            prefix_hits=0,
            preemptions=0,
            prompt_tokens=1500,
            generation_tokens=290,
            ttft=(1.49, 30),
        )
    )
    c = by_name(run_checks(recs(), server, MANIFEST, SUMMARY))
    assert {k: v["status"] for k, v in c.items()} == {
        "prefix_cache": "pass",
        "preemptions": "pass",
        "tokens_prompt": "pass",
        "tokens_generated": "pass",
        "ttft_agreement": "pass",
        "queueing": "pass",
        "kv_cache": "pass",
        "steadiness": "pass",
        "client_send_lag": "pass",
    }
    assert c["ttft_agreement"]["figure"] == 1.0  # client 50 ms, engine (0.49 s / 10) 49 ms


def test_what_went_wrong_fails_or_warns_with_its_figure():
    server = [
        scrape("before", 0.0, prefix_queries=0, prefix_hits=0, preemptions=0, prompt_tokens=0, generation_tokens=0)
    ]
    server += [scrape("measure", 1.0 + i, running=4 if i % 2 else 1, waiting=3, kv_usage=0.99) for i in range(8)]
    server.append(
        scrape(
            "after",
            10.0,
            prefix_queries=1000,
            prefix_hits=500,
            preemptions=7,
            prompt_tokens=1000,
            generation_tokens=150,
        )
    )
    c = by_name(run_checks(recs(), server, MANIFEST, SUMMARY))
    assert c["prefix_cache"]["status"] == "fail" and c["prefix_cache"]["figure"] == 0.5
    assert c["preemptions"]["status"] == "fail" and c["preemptions"]["figure"] == 7
    assert c["tokens_generated"]["status"] == "fail" and "(-25.0%)" in c["tokens_generated"]["why"]
    assert c["queueing"]["status"] == "warn" and c["queueing"]["figure"] == 3
    assert c["kv_cache"]["status"] == "warn" and c["steadiness"]["status"] == "warn"


def test_a_shared_prefix_is_expected_in_the_cache():
    manifest = {**MANIFEST, "workload": {"input_len": 100, "prefix_len": 50}}
    server = [
        scrape("before", 0.0, prefix_queries=0, prefix_hits=0),
        scrape("after", 9.0, prefix_queries=1000, prefix_hits=480),
    ]
    c = by_name(run_checks(recs(), server, manifest, SUMMARY))
    assert c["prefix_cache"]["status"] == "pass" and c["prefix_cache"]["limit"] == 0.5


def test_a_window_no_scrape_fell_in_says_queueing_went_unchecked():
    server = [scrape("before", 0.0, running=0, waiting=0), scrape("after", 0.5, running=0, waiting=0)]
    c = by_name(run_checks(recs(), server, MANIFEST, {**SUMMARY, "duration": 0.5}))
    assert c["queueing"]["status"] == "warn" and c["queueing"]["figure"] is None
    assert "no scrape fell inside the 0.50 s measured window" in c["queueing"]["why"]


def test_no_telemetry_leaves_only_the_client_checks():
    assert [c["check"] for c in run_checks(recs(), [], MANIFEST, SUMMARY)] == ["client_send_lag"]


def test_hardware_share_of_the_gpus_peak():
    manifest = {**MANIFEST, "gpus": [{"name": "NVIDIA H200"}] * 8, "gpu_count": 8}
    server = [
        scrape("before", 0.0, flops=0, read_bytes=0, write_bytes=0),
        scrape("after", 10.0, flops=8 * 10 * 500e12, read_bytes=8 * 10 * 2.4e12, write_bytes=0),
    ]
    (hw,) = [c for c in run_checks(recs(), server, manifest, SUMMARY) if c["check"] == "hardware"]
    assert round(hw["figure"]["tflops_per_gpu"]) == 500 and "25.3% of FP8 peak and 50.0% of HBM" in hw["why"]


def test_bench_check_and_the_timeline_read_a_run_folder(tmp_path, capsys):
    import json

    from bench.cli import main
    from bench.results import timeline

    run = tmp_path / "run"
    run.mkdir()
    (run / "requests.jsonl").write_text("".join(r.to_json().decode() + "\n" for r in recs()))
    (run / "manifest.json").write_text(json.dumps(MANIFEST))
    (run / "summary.json").write_text(json.dumps(SUMMARY))
    server = [scrape("warmup", 0.0, running=1, generation_tokens=0)]
    server += [scrape("before", 1.0, preemptions=0, generation_tokens=10)]
    server += [scrape("measure", 2.0 + i, running=4, waiting=0, generation_tokens=10 + 100 * (i + 1)) for i in range(6)]
    server += [scrape("after", 8.0, preemptions=2, generation_tokens=700)]
    (run / "server.jsonl").write_text("".join(json.dumps(s) + "\n" for s in server))
    assert main(["check", str(run), "--write"]) == 1  # the preemptions fail it
    out = capsys.readouterr().out
    assert re.search(r"preemptions +fail +2 preemptions", out)
    assert {c["check"] for c in json.loads((run / "summary.json").read_text())["checks"]} >= {"preemptions", "queueing"}
    s = timeline.timeline_series(server)
    assert s["window"] == (1.0, 8.0) and s["tokens_per_s"][3] == 100.0
    assert (
        timeline.plot_timeline(server, "t", tmp_path / "timeline.png")
        and (tmp_path / "timeline.png").stat().st_size > 0
    )


def test_ttft_agreement_is_judged_by_the_engines_bucket_width():
    buckets = [[0.005, 0], [0.01, 10], [0.02, 10]]  # the engine's mean (9 ms) falls in (5, 10] ms
    for client_ms, status in ((11.0, "pass"), (25.0, "warn"), (7.5, "warn")):
        server = [scrape("before", 0.0), scrape("after", 9.0)]
        server[0]["histograms"]["ttft"] = {"sum": 0.0, "count": 0, "buckets": []}
        server[1]["histograms"]["ttft"] = {"sum": 0.09, "count": 10, "buckets": buckets}
        (agree,) = [
            c
            for c in run_checks(recs(), server, MANIFEST, {**SUMMARY, "mean_ttft_ms": client_ms})
            if c["check"] == "ttft_agreement"
        ]
        assert agree["status"] == status and agree["limit"] == 5.0, (client_ms, agree)


def test_a_token_rate_that_swings_is_not_steady():
    server = [scrape("before", 0.0)]
    gen = [0, 100, 200, 220, 240, 500, 520, 800, 820, 840]  # bursts and lulls at a constant 4 running
    server += [scrape("measure", 1.0 + i, running=4, waiting=0, generation_tokens=g) for i, g in enumerate(gen)]
    server.append(scrape("after", 12.0))
    (steady,) = [c for c in run_checks(recs(), server, MANIFEST, SUMMARY) if c["check"] == "steadiness"]
    assert steady["status"] == "warn" and "running requests vary by 0%, the token rate by" in steady["why"]
