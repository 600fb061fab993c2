"""Tokens per chunk for a server that reports usage only in its last chunk, on hand-made streams."""

from __future__ import annotations

import json

from bench.instrument import chunk_tokens
from bench.instrument.records import Record
from bench.instrument.stream import StreamParser
from bench.instrument.workload import load_tokenizer, token_counter
from conftest import ROOT

COUNT = token_counter(load_tokenizer(str(ROOT / "recipes/models/tiny-llama")))


def transformers_stream(texts: list[str], total: int) -> list[dict]:
    """Events shaped as `transformers serve` sends them: text only, then an empty text with finish_reason
    and usage, and no [DONE] line."""
    events = [{"choices": [{"index": 0, "text": t}], "object": "text_completion"} for t in texts]
    usage = {"completion_tokens": total, "prompt_tokens": 7, "total_tokens": 7 + total}
    return events + [{"choices": [{"finish_reason": "length", "index": 0, "text": ""}], "usage": usage}]


HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


def parsed(events: list[dict]) -> Record:
    """The record of a chunked HTTP body holding `events`, one read per event, then its clean end."""
    p = StreamParser("completions")
    p.feed(HEAD, 1.0)
    for i, e in enumerate(events):
        event = b"data: " + json.dumps(e).encode() + b"\n\n"
        p.feed(b"%x\r\n%s\r\n" % (len(event), event), 1.0 + 0.01 * (i + 1))
    p.feed(b"0\r\n\r\n", 2.0)
    rec = Record(0, False, 0.0, 0.0)
    p.fill(rec, COUNT)
    return rec


def test_the_final_usage_is_the_total_not_a_chunk():
    rec = parsed(transformers_stream([" a", " b", " c", " d"], 4))
    assert rec.ok, rec.error  # no [DONE] line, but the finish_reason ended the stream
    assert rec.chunk_tokens == [1, 1, 1, 1] and rec.chunk_tokens_source == "one_each"
    assert rec.completion_tokens == 4 and len(rec.chunk_times) == 4  # the usage chunk is no content chunk


def test_a_chunk_carrying_two_tokens_gets_both():
    # A token ending inside a UTF-8 character streams no text; the next chunk carries both (as seen from
    # Transformers' server: '\ufffd cur'), which the tokenizer counts as 4, the byte tokens of U+FFFD and ' cur'.
    assert COUNT("\ufffd cur") > 2
    rec = parsed(transformers_stream([" a", "\ufffd cur", " b"], 4))
    assert rec.chunk_tokens == [1, 2, 1] and rec.chunk_tokens_source == "fitted"


def test_tokenizer_counts_that_add_up_are_kept():
    texts = [" def", " return None", " x"]
    counts = [COUNT(t) for t in texts]
    assert counts[1] == 2
    rec = parsed(transformers_stream(texts, sum(counts)))
    assert rec.chunk_tokens == counts and rec.chunk_tokens_source == "tokenizer"


def test_what_does_not_add_up_is_said():
    # More chunks than tokens: nothing fits; the tokenizer's counts stay and the record says so.
    rec = parsed(transformers_stream([" a", " b", " c"], 2))
    assert rec.chunk_tokens_source == "unmatched" and sum(rec.chunk_tokens) == 3 and rec.completion_tokens == 2


def test_a_stream_without_finish_reason_or_done_is_cut_short():
    events = transformers_stream([" a", " b"], 2)[:-1]  # no final event: it never finished
    rec = parsed(events)
    assert rec.error_kind == "truncated" and "[DONE]" in rec.error


def test_fit_gives_the_most_room_first_and_refuses_what_cannot_fit():
    assert chunk_tokens._fit([1, 3, 2], ["a", "bcd", "ef"], 5) == [1, 3, 1]
    assert chunk_tokens._fit([1, 1], ["a", "b"], 3) is None
    assert chunk_tokens._fit([1, 1], ["a", "é"], 3) == [1, 2]


def test_without_any_usage_the_tokenizer_counts_and_says_so():
    events = [{"choices": [{"index": 0, "text": t}]} for t in (" a", " return None")] + [
        {"choices": [{"index": 0, "text": "", "finish_reason": "length"}]}
    ]
    rec = parsed(events)
    assert rec.chunk_tokens == [1, 2] and rec.usage_source == "counted" and rec.completion_tokens == 3
