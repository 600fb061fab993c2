"""bench.instrument.metrics against records whose every number is worked out by hand below."""

import pytest

from bench.errors import UserError
from bench.instrument.metrics import format_summary, summarise
from bench.instrument.records import Record


def approx(x):
    return pytest.approx(x, rel=1e-9, abs=1e-9)


def records():
    return [
        # warm-up: would change every number if it were counted
        Record(
            id=0,
            warmup=True,
            scheduled=0.0,
            sent=0.0,
            first=5.0,
            last=9.0,
            chunk_times=[5.0, 9.0],
            chunk_tokens=[1, 1],
            completion_tokens=2,
            prompt_tokens=10,
        ),
        # A: sent 10 ms late; 4 chunks, the third carries 2 tokens; 5 output tokens
        Record(
            id=1,
            warmup=False,
            scheduled=1.0,
            sent=1.01,
            first=1.21,
            last=1.61,
            chunk_times=[1.21, 1.31, 1.51, 1.61],
            chunk_tokens=[1, 1, 2, 1],
            completion_tokens=5,
            prompt_tokens=10,
            input_len=10,
            output_len=5,
            status=200,
        ),
        # B: on time; server counted 12 prompt tokens for 10 asked, 2 output for 3 asked
        Record(
            id=2,
            warmup=False,
            scheduled=2.0,
            sent=2.0,
            first=2.3,
            last=2.7,
            chunk_times=[2.3, 2.7],
            chunk_tokens=[1, 1],
            completion_tokens=2,
            prompt_tokens=12,
            input_len=10,
            output_len=3,
            status=200,
        ),
        # C: failed, sent 50 ms late
        Record(id=3, warmup=False, scheduled=3.0, sent=3.05, status=500, error="HTTP 500: boom", error_kind="http_5xx"),
        # D: one token, no usage from the server (counted), no prompt_tokens
        Record(
            id=4,
            warmup=False,
            scheduled=4.0,
            sent=4.0,
            first=4.5,
            last=4.5,
            chunk_times=[4.5],
            chunk_tokens=[1],
            completion_tokens=1,
            usage_source="counted",
            input_len=8,
            status=200,
        ),
    ]


def test_counts_window_and_throughput():
    s = summarise(records(), gpu_count=2)
    # window: first measured send 1.01 .. last completion 4.5 (the warm-up's 0.0 is ignored)
    assert s["duration"] == approx(3.49)
    assert (s["completed"], s["failed"], s["warmup_excluded"]) == (3, 1, 1)
    assert s["total_output_tokens"] == 5 + 2 + 1
    assert s["total_input_tokens"] == 10 + 12 + 8  # D falls back to the requested length
    assert s["request_throughput"] == approx(3 / 3.49)
    assert s["output_throughput"] == approx(8 / 3.49)
    assert s["total_token_throughput"] == approx(38 / 3.49)
    assert s["output_throughput_per_gpu"] == approx(8 / 3.49 / 2)
    assert s["request_throughput_per_gpu"] == approx(3 / 3.49 / 2)
    assert "request_goodput" not in s


def test_latencies_like_vllm():
    s = summarise(records())
    # TTFT ms: A 200, B 300, D 500
    assert s["mean_ttft_ms"] == approx(1000 / 3)
    assert s["median_ttft_ms"] == approx(300)
    assert s["std_ttft_ms"] == approx(
        (((200 - 1000 / 3) ** 2 + (300 - 1000 / 3) ** 2 + (500 - 1000 / 3) ** 2) / 3) ** 0.5
    )
    assert s["p90_ttft_ms"] == approx(300 + 0.8 * 200)
    assert s["p99_ttft_ms"] == approx(300 + 0.98 * 200)
    # TPOT ms: A (600-200)/4 = 100, B (700-300)/1 = 400, D has one token: none
    assert (s["mean_tpot_ms"], s["median_tpot_ms"], s["std_tpot_ms"]) == (approx(250), approx(250), approx(150))
    assert s["p99_tpot_ms"] == approx(100 + 0.99 * 300)
    # ITL ms: A 100, 200, 100; B 400
    assert (s["mean_itl_ms"], s["median_itl_ms"]) == (approx(200), approx(150))
    assert s["p99_itl_ms"] == approx(200 + 0.97 * 200)
    # E2EL ms: A 600, B 700, D 500
    assert (s["mean_e2el_ms"], s["p50_e2el_ms"]) == (approx(600), approx(600))


def test_multi_token_chunks_are_normalised_not_hidden():
    s = summarise(records())
    # A's 200 ms gap ends in a 2-token chunk: two values of 100 ms; others one each.
    # token ITL: [100, 100, 100, 100] from A, [400] from B
    assert s["mean_token_itl_ms"] == approx(160)
    assert s["median_token_itl_ms"] == approx(100)
    assert s["p99_token_itl_ms"] == approx(100 + 0.96 * 300)
    assert (s["total_chunks"], s["multi_token_chunks"], s["max_chunk_tokens"]) == (7, 1, 2)
    assert s["requests_without_chunk_tokens"] == 0


def test_token_itl_is_null_when_chunk_counts_are_missing():
    recs = records()
    recs[2].chunk_tokens = []
    s = summarise(recs)
    assert s["mean_token_itl_ms"] is None and s["requests_without_chunk_tokens"] == 1
    assert s["mean_itl_ms"] == approx(200)  # plain ITL does not need token counts


def test_send_lag_and_latency_from_schedule():
    s = summarise(records())
    # lags ms: A 10, B 0, C 50, D 0 (failed requests were sent too)
    assert (s["mean_send_lag_ms"], s["median_send_lag_ms"], s["max_send_lag_ms"]) == (approx(15), approx(5), approx(50))
    # TTFT from schedule: A 210, B 300, D 500; E2EL from schedule: 610, 700, 500
    assert s["mean_ttft_from_scheduled_ms"] == approx(1010 / 3)
    assert s["mean_e2el_from_scheduled_ms"] == approx(1810 / 3)


def test_interactivity_errors_lengths_and_usage():
    s = summarise(records())
    # 1/TPOT: A 10 tok/s, B 2.5 tok/s
    assert s["mean_interactivity_tok_s_user"] == approx(6.25)
    assert s["p1_interactivity_tok_s_user"] == approx(2.5 + 0.01 * 7.5)
    assert s["errors_by_kind"] == {"http_5xx": 1}
    assert (s["input_len_mismatches"], s["output_len_mismatches"]) == (1, 1)
    assert s["usage_source"] == {"server": 2, "counted": 1}
    assert (s["output_tokens_counted"], s["input_tokens_from_request"]) == (1, 1)


def test_goodput_and_given_duration():
    # ttft <= 350 and tpot <= 150: only A (D's ttft is 500); one-token D counts TPOT 0
    s = summarise(records(), duration=10.0, goodput_slo={"ttft": 350, "tpot": 150})
    assert s["duration"] == 10.0 and s["output_throughput"] == approx(0.8)
    assert (s["good_requests"], s["request_goodput"]) == (1, approx(0.1))
    s = summarise(records(), duration=10.0, goodput_slo={"e2el": 650})
    assert s["good_requests"] == 2  # A 600, D 500; B 700 misses
    with pytest.raises(UserError, match="unknown SLO name itl"):
        summarise(records(), goodput_slo={"itl": 10})


def test_nothing_measured_gives_nulls_not_zeros():
    s = summarise([r for r in records() if r.warmup or not r.ok])
    assert (s["completed"], s["failed"], s["duration"]) == (0, 1, 0.0)
    assert s["output_throughput"] is None and s["mean_ttft_ms"] is None


def test_format_summary_table():
    text = format_summary(summarise(records(), gpu_count=2))
    assert "Output throughput (tok/s)" in text and "2.29" in text  # 8 / 3.49
    ttft_row = next(line for line in text.splitlines() if line.startswith("TTFT (ms)"))
    assert "333.33" in ttft_row and "496.00" in ttft_row
    assert "http_5xx: 1" in text and "1 of 7" in text


def test_chunks_sent_together_are_counted_and_explained():
    from bench.instrument.verdict import judge, notes

    # Three chunks of which the last two arrived together (gap 0), in one of two requests.
    together = Record(
        id=0,
        warmup=False,
        scheduled=0.0,
        sent=0.0,
        first=0.1,
        last=0.2,
        chunk_times=[0.1, 0.2, 0.2],
        chunk_tokens=[1, 1, 1],
        completion_tokens=3,
    )
    apart = Record(
        id=1,
        warmup=False,
        scheduled=0.0,
        sent=0.0,
        first=0.1,
        last=0.3,
        chunk_times=[0.1, 0.2, 0.3],
        chunk_tokens=[1, 1, 1],
        completion_tokens=3,
    )
    s = summarise([together, apart])
    assert s["zero_gap_chunks"] == 1 and s["zero_gap_share"] == 0.25 and s["requests_with_zero_gaps"] == 0.5
    assert "25.0% of the chunk gaps are under 0.1 ms" in notes(s)[0]
    assert notes(summarise([apart])) == []
    assert judge(s, 0.99) == {"status": "ok", "reasons": []}


def test_the_verdict_counts_interrupted_requests_apart():
    from bench.instrument.verdict import judge

    ok = [
        Record(
            id=i,
            warmup=False,
            scheduled=0.0,
            sent=0.0,
            first=0.1,
            last=0.2,
            chunk_times=[0.1, 0.2],
            chunk_tokens=[1, 1],
            completion_tokens=2,
        )
        for i in range(98)
    ]
    cut = [
        Record(id=98 + i, warmup=False, scheduled=0.0, sent=0.0, error="cut", error_kind="interrupted")
        for i in range(2)
    ]
    s = summarise(ok + cut)
    assert (s["completed"], s["failed"], s["interrupted"], s["success_rate"]) == (98, 0, 2, 1.0)
    bad = [Record(id=200, warmup=False, scheduled=0.0, sent=0.0, error="x", error_kind="http_5xx")] * 2
    s = summarise(ok + bad)
    assert s["failed"] == 2 and judge(s, 0.99)["status"] == "failed"
    assert "98.0% of the requests succeeded, below --min-success 99% (http_5xx 2)" in judge(s, 0.99)["reasons"][0]
    assert judge(s, 0.98)["status"] == "ok"
