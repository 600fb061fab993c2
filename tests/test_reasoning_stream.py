"""Reasoning and answer chunks told apart, on hand-made streams in each server's spelling.

Each stream goes through the reader's fast path (one read per event, as a server that flushes
every event is read) and through the general parser, one event at a time; both must give the
same record, and the arrival times are the event numbers, so the expected times are plain.
"""

import json

import pytest

from bench.instrument import metrics
from bench.instrument.reader import ResponseReader
from bench.instrument.reasoning import split_inline
from bench.instrument.records import Record
from bench.instrument.stream import StreamParser

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


def frame(obj, compact: bool = True) -> bytes:
    text = obj if isinstance(obj, bytes) else json.dumps(obj, separators=(",", ":") if compact else None).encode()
    event = b"data: " + text + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(event), event)


def chat(delta: dict, done: int, reasoning_tokens: int | None = None) -> dict:
    usage = {"prompt_tokens": 7, "total_tokens": 7 + done, "completion_tokens": done}
    if reasoning_tokens is not None:
        usage["completion_tokens_details"] = {"reasoning_tokens": reasoning_tokens}
    return {"id": "x", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta}], "usage": usage}


def text(t: str, done: int) -> dict:
    return {"id": "x", "choices": [{"index": 0, "text": t}], "usage": {"prompt_tokens": 7, "completion_tokens": done}}


def tail(done: int, reasoning_tokens: int | None = None) -> list:
    last = chat({}, done, reasoning_tokens)
    last["choices"] = []
    return [last, b"[DONE]"]


def through_both(events: list, api: str = "chat", think: bool = False, compact: bool = True, last: int = 1) -> Record:
    """The record the fast path makes (reads at event boundaries, event n at time n, the `last`
    events in one read), checked against the general parser's."""
    frames = [frame(e, compact) for e in events]
    reads = [HEAD + frames[0], *frames[1:-last], b"".join(frames[-last:]) + b"0\r\n\r\n"]
    reader = ResponseReader(api, think)
    assert [reader.feed(data, float(n)) for n, data in enumerate(reads)][-1]
    assert reader.general is None or not compact, "a compact stream with usage should stay on the fast path"
    fast = Record(id=0, warmup=False, scheduled=0.0, sent=0.0)
    reader.fill(fast, count=len)
    parser = StreamParser(api, think)
    for n, data in enumerate(reads):
        parser.feed(data, float(n))
    general = Record(id=0, warmup=False, scheduled=0.0, sent=0.0)
    parser.fill(general, count=len)
    assert fast == general
    assert fast.error == ""
    # The whole response in one read (a short answer): the reader's one-read way, or the general
    # one where there is reasoning, must agree with the general parser fed the same read.
    whole, one_read = ResponseReader(api, think), b"".join(reads)
    assert whole.feed(one_read, 0.0)
    by_reader = Record(id=0, warmup=False, scheduled=0.0, sent=0.0)
    whole.fill(by_reader, count=len)
    parser = StreamParser(api, think)
    parser.feed(one_read, 0.0)
    by_parser = Record(id=0, warmup=False, scheduled=0.0, sent=0.0)
    parser.fill(by_parser, count=len)
    assert by_reader == by_parser and by_reader.error == ""
    return fast


def vllm_r1(spelling: str = "reasoning", details: bool = True) -> list:
    """vLLM 0.32 with --reasoning-parser deepseek_r1: role chunk, 3 reasoning tokens, the end tag's
    token folded into the first answer chunk's usage, 2 answer tokens; reasoning_tokens 0 (vLLM
    counts only tokens between tags in the output, and the prompt opened this one)."""
    r = 0 if details else None
    return [
        chat({"role": "assistant", "content": ""}, 0, r),
        chat({spelling: " Let"}, 1, r),
        chat({spelling: " me"}, 2, r),
        chat({spelling: " think"}, 3, r),
        chat({"content": "\n\n"}, 5, r),
        chat({"content": " Yes"}, 6, r),
        *tail(6, r),
    ]


@pytest.mark.parametrize("spelling", ["reasoning", "reasoning_content"])
def test_first_reasoning_and_first_answer_chunks_in_either_spelling(spelling):
    rec = through_both(vllm_r1(spelling))
    assert rec.chunk_times == [1.0, 2.0, 3.0, 4.0, 5.0] and rec.chunk_tokens == [1, 1, 1, 2, 1]
    assert (rec.first, rec.first_reasoning, rec.first_answer) == (1.0, 1.0, 4.0)
    # the server said 0 though it labelled three chunks reasoning: the count wins
    assert (rec.reasoning_tokens, rec.reasoning_source) == (3, "counted")
    assert metrics.answer_tokens(rec) == 3 and metrics.ttfo(rec) == 4.0 and metrics.ttft(rec) == 1.0


def test_the_servers_reasoning_token_count_is_taken_when_it_reports_one():
    events = [
        chat({"role": "assistant", "content": None, "reasoning_content": None}, 0, 0),
        chat({"content": None, "reasoning_content": " a b"}, 2, 2),  # SGLang spells the other field null
        chat({"content": None, "reasoning_content": " c"}, 3, 3),
        chat({"content": " d", "reasoning_content": None}, 4, 3),
        *tail(4, 3),
    ]
    rec = through_both(events)
    assert (rec.first_reasoning, rec.first_answer) == (1.0, 3.0)
    assert (rec.reasoning_tokens, rec.reasoning_source) == (3, "server")


def test_a_chunk_with_the_end_of_reasoning_and_the_start_of_the_answer_starts_the_answer():
    events = [
        chat({"reasoning": " a"}, 1),
        chat({"reasoning": " b", "content": " c"}, 3),  # a stream interval above 1 joins them
        chat({"content": " d"}, 4),
        *tail(4),
    ]
    rec = through_both(events)
    assert (rec.first_reasoning, rec.first_answer, rec.reasoning_tokens) == (0.0, 1.0, 1)


def test_a_stream_that_ends_while_reasoning_has_no_answer():
    events = [chat({"reasoning": " a"}, 1), chat({"reasoning": " b"}, 2), *tail(2)]
    rec = through_both(events)
    assert (rec.first_reasoning, rec.first_answer, rec.reasoning_tokens) == (0.0, None, 2)
    assert metrics.ttfo(rec) is None
    s = metrics.summarise([rec])
    assert s["requests_without_answer"] == 1 and s["mean_ttfo_ms"] is None


def test_reasoning_spelled_with_spaces_is_still_labelled():
    rec = through_both(vllm_r1(), compact=False)
    assert (rec.first_reasoning, rec.first_answer, rec.reasoning_tokens) == (1.0, 4.0, 3)


def test_without_reasoning_the_answer_starts_at_the_first_chunk():
    events = [chat({"role": "assistant", "content": ""}, 0), chat({"content": " a"}, 1), chat({"content": " b"}, 2)]
    rec = through_both(events + tail(2))
    assert (rec.first, rec.first_reasoning, rec.first_answer, rec.reasoning_tokens) == (1.0, None, 1.0, 0)
    s = metrics.summarise([rec])
    assert s["requests_with_reasoning"] == 0 and s["mean_ttfo_ms"] == s["mean_ttft_ms"]


def test_inline_think_tags_split_completions_when_the_tokenizer_has_them():
    events = [
        text("<think>", 1),
        text(" a", 2),
        text("</think>", 3),
        text(" b", 4),
        text(" c", 5),
        *tail(5),
    ]
    rec = through_both(events, api="completions", think=True)
    assert (rec.first_reasoning, rec.first_answer, rec.reasoning_tokens) == (0.0, 3.0, 3)
    plain = through_both(events, api="completions", think=False)
    assert (plain.first_reasoning, plain.first_answer, plain.reasoning_tokens) == (None, 0.0, 0)


def test_an_end_tag_without_a_start_means_the_prompt_opened_the_thinking():
    events = [text(" a", 1), text(" b", 2), text("</think>", 3), text("\n\nc", 4), *tail(4)]
    rec = through_both(events, api="completions", think=True)
    assert (rec.first_reasoning, rec.first_answer, rec.reasoning_tokens) == (0.0, 3.0, 3)


def test_several_events_in_one_read_are_labelled_one_by_one():
    frames = [frame(e) for e in vllm_r1()]
    reader = ResponseReader("chat")
    reader.feed(HEAD + frames[0], 0.0)
    reader.feed(b"".join(frames[1:4]), 1.0)  # three reasoning events read together
    reader.feed(b"".join(frames[4:]) + b"0\r\n\r\n", 2.0)
    rec = Record(id=0, warmup=False, scheduled=0.0, sent=0.0)
    reader.fill(rec)
    assert rec.chunk_tokens == [1, 1, 1, 2, 1] and rec.reasoning_tokens == 3
    assert (rec.first_reasoning, rec.first_answer) == (1.0, 2.0)


def test_chunks_without_usage_are_counted_by_the_tokenizer():
    events = [
        {"choices": [{"delta": {"reasoning_content": "abc"}}]},
        {"choices": [{"delta": {"content": "de"}}]},
        b"[DONE]",
    ]
    p = StreamParser("chat")
    p.feed(HEAD + b"".join(frame(e) for e in events) + b"0\r\n\r\n", 1.0)
    rec = Record(id=0, warmup=False, scheduled=0.0, sent=0.0)
    p.fill(rec, count=len)
    assert rec.chunk_tokens == [3, 2] and rec.completion_tokens == 5
    assert (rec.reasoning_tokens, rec.reasoning_source) == (3, "counted")


def test_split_inline_cuts_at_each_tag():
    assert split_inline("x<think>y</think>z", False) == ("<think>y</think>", "x" + "z", False, False)
    assert split_inline("y</think>z", False) == ("y</think>", "z", False, True)
    assert split_inline("y", True) == ("y", "", True, False)


def test_summary_keys_on_hand_computed_records():
    def rec(sent, first, first_reasoning, first_answer, last, reasoning):
        return Record(
            id=0,
            warmup=False,
            scheduled=sent,
            sent=sent,
            first=first,
            last=last,
            chunk_times=[first, last],
            chunk_tokens=[1, 10],
            completion_tokens=11,
            first_reasoning=first_reasoning,
            first_answer=first_answer,
            reasoning_tokens=reasoning,
            reasoning_source="server",
        )

    thinking = rec(0.0, 0.1, 0.1, 0.5, 1.0, 5)  # TTFO 500 ms; 6 answer tokens: (1.0 - 0.5) / 5 = 100 ms
    plain = rec(1.0, 1.2, None, 1.2, 1.7, 0)  # TTFO = TTFT = 200 ms; (1.7 - 1.2) / 10 = 50 ms
    old = Record(id=0, warmup=False, scheduled=2.0, sent=2.0, first=2.1, last=2.2, completion_tokens=2)
    s = metrics.summarise([thinking, plain, old])
    assert s["mean_ttfo_ms"] == pytest.approx(350) and s["p99_ttfo_ms"] == pytest.approx(500 - 0.01 * 300)
    assert s["mean_ttft_ms"] == pytest.approx(400 / 3)  # the first chunk of either kind, all three
    assert s["mean_answer_tpot_ms"] == pytest.approx(75)
    assert (s["requests_with_reasoning"], s["requests_without_answer"]) == (1, 0)
    assert (s["total_reasoning_tokens"], s["total_answer_tokens"]) == (5, 6 + 11 + 2)
    assert s["reasoning_tokens_source"] == {"server": 2}
    assert "TTFO" in metrics.format_summary(s) and "TTFO" not in metrics.format_summary(metrics.summarise([plain]))


def test_a_token_without_text_goes_with_the_chunk_before_it():
    events = [
        chat({"reasoning": " a"}, 1),
        chat({"reasoning": ""}, 2),  # half a character: vLLM sends the token with no text
        chat({}, 3),  # no text field at all: as the one before
        chat({"content": ""}, 4),  # the answer's field, empty: the answer began
        chat({"content": " b"}, 5),
        *tail(5),
    ]
    rec = through_both(events)
    assert (rec.first_reasoning, rec.first_answer, rec.reasoning_tokens) == (0.0, 3.0, 3)


def test_thinking_after_the_answer_began_counts_as_answer():
    events = [
        chat({"reasoning": " a"}, 1),
        chat({"content": " b"}, 2),
        chat({"reasoning": " c"}, 3),  # thinks again, between tool calls say
        chat({"content": " d"}, 4),
        chat({"reasoning": " e"}, 5),  # in the stream's last read, which takes another path
        *tail(5),
    ]
    rec = through_both(events, last=3)
    assert (rec.first_reasoning, rec.first_answer, rec.reasoning_tokens) == (0.0, 1.0, 1)
