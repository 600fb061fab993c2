"""The response parser on hand-made bytes, cut at every possible boundary."""

import json

from bench.instrument.reader import ResponseReader
from bench.instrument.records import Record
from bench.instrument.stream import StreamParser


def sse(obj) -> bytes:
    return b"data: " + (obj if isinstance(obj, bytes) else json.dumps(obj).encode()) + b"\n\n"


def chunked(*pieces: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


def completion(text, done, prompt=5):
    return {"choices": [{"index": 0, "text": text}], "usage": {"prompt_tokens": prompt, "completion_tokens": done}}


EVENTS = [
    completion("a", 1),
    completion("bc", 3),
    completion("", 3),
    completion("d", 4),
    {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 4}},
    b"[DONE]",
]
BODY = HEAD + chunked(*(sse(e) for e in EVENTS))


def parse(data: bytes, cut: int | None = None, api="completions") -> tuple[StreamParser, Record]:
    p = StreamParser(api)
    if cut is None:
        p.feed(data, 1.0)
    else:
        p.feed(data[:cut], 1.0)
        p.feed(data[cut:], 2.0)
    rec = Record(id=0, warmup=False, scheduled=0.0, sent=0.0)
    p.fill(rec)
    return p, rec


def test_every_cut_gives_the_same_chunks_and_tokens():
    for cut in range(len(BODY) + 1):
        p, rec = parse(BODY, cut)
        assert p.finished, cut
        assert rec.chunk_tokens == [1, 2, 1], cut  # the empty-text, no-token event is not a chunk
        assert (rec.prompt_tokens, rec.completion_tokens, rec.error) == (5, 4, ""), cut


def test_arrival_time_is_that_of_the_bytes_that_complete_the_event():
    first_event_end = BODY.index(b"\n\n", len(HEAD)) + 2
    _, rec = parse(BODY, first_event_end - 1)
    assert rec.chunk_times[0] == 2.0
    _, rec = parse(BODY, first_event_end + 2)
    assert rec.chunk_times[0] == 1.0


def test_chat_role_chunk_is_not_content_and_tokens_fall_back_to_counting():
    events = [
        {"choices": [{"delta": {"role": "assistant", "content": ""}}]},
        {"choices": [{"delta": {"content": "xy"}}]},
        {"choices": [{"delta": {"content": "z"}}]},
    ]
    p = StreamParser("chat")
    p.feed(HEAD + chunked(*(sse(e) for e in events), sse(b"[DONE]")), 3.0)
    rec = Record(id=0, warmup=False, scheduled=0.0, sent=0.0)
    p.fill(rec, count=len)
    assert rec.chunk_tokens == [2, 1]
    assert rec.completion_tokens == 3 and rec.usage_source == "counted"


def test_http_error_keeps_status_and_message():
    body = json.dumps({"error": {"message": "model not found"}}).encode()
    data = b"HTTP/1.1 404 Not Found\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
    p, rec = parse(data)
    assert rec.status == 404 and rec.error_kind == "http_4xx"
    assert "model not found" in rec.error


def test_error_event_mid_stream_is_recorded():
    data = HEAD + chunked(sse(completion("a", 1)), sse({"error": {"message": "engine died"}}))
    _, rec = parse(data)
    assert rec.error_kind == "http_5xx" and "engine died" in rec.error


def reads_at_event_boundaries(body: bytes) -> list[bytes]:
    """Cut a response where a server that flushes every event would: after each HTTP chunk."""
    head_end = body.index(b"\r\n\r\n") + 4
    cuts = [head_end] + [i + 4 for i in range(len(body)) if body.startswith(b"\n\n\r\n", i)]
    edges = [0] + cuts + [len(body)]
    return [body[a:b] for a, b in zip(edges, edges[1:]) if b > a]


def read_all(reads) -> tuple[ResponseReader, Record]:
    """Feed reads (bytes, arrival time) as the connection does; the reader and its record."""
    reader = ResponseReader("completions")
    finished = [reader.feed(data, t) for data, t in reads]
    assert finished[-1] and not any(finished[:-1])
    rec = Record(id=0, warmup=False, scheduled=0.0, sent=0.0)
    reader.fill(rec, count=len)
    general = Record(id=0, warmup=False, scheduled=0.0, sent=0.0)
    reader.result().fill(general, count=len)
    assert rec == general, "the reader's own fill and the general parser's must agree"
    return reader, rec


def test_fast_path_agrees_with_the_general_parser():
    reads = [(data, float(i)) for i, data in enumerate(reads_at_event_boundaries(BODY))]
    reader, rec = read_all(reads)
    assert reader.general is None, "a clean stream with continuous usage should stay on the fast path"
    _, general = parse(BODY)
    assert (
        (rec.chunk_tokens, rec.completion_tokens, rec.prompt_tokens, rec.error)
        == (general.chunk_tokens, general.completion_tokens, general.prompt_tokens, general.error)
        == ([1, 2, 1], 4, 5, "")
    )
    assert rec.chunk_times == [1.0, 2.0, 4.0]


def test_every_cut_through_the_reader_gives_the_same_record():
    for cut in range(1, len(BODY)):
        _, rec = read_all([(BODY[:cut], 1.0), (BODY[cut:], 2.0)])
        assert (rec.chunk_tokens, rec.completion_tokens, rec.prompt_tokens, rec.error) == ([1, 2, 1], 4, 5, ""), cut


def test_a_read_that_splits_an_event_hands_over_to_the_general_parser():
    reads = reads_at_event_boundaries(BODY)
    second = reads[2]  # the second event: cut it in two reads
    pieces = [(reads[0], 0.0), (reads[1], 1.0), (second[:10], 2.0), (second[10:], 3.0)] + [
        (d, 4.0 + i) for i, d in enumerate(reads[3:])
    ]
    reader, rec = read_all(pieces)
    assert reader.general is not None
    assert rec.chunk_times == [1.0, 3.0, 5.0] and rec.chunk_tokens == [1, 2, 1] and rec.completion_tokens == 4


def test_final_usage_only_is_not_mistaken_for_per_chunk_usage():
    events = [
        {"choices": [{"text": "ab"}]},
        {"choices": [{"text": "c"}]},
        {"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 3}},
        b"[DONE]",
    ]
    body = HEAD + chunked(*(sse(e) for e in events))
    reader, rec = read_all([(d, float(i)) for i, d in enumerate(reads_at_event_boundaries(body))])
    assert reader.general is not None
    assert rec.chunk_tokens == [2, 1] and rec.completion_tokens == 3 and rec.usage_source == "server"


def test_an_error_event_on_the_fast_path_is_recorded():
    body = HEAD + chunked(sse(completion("a", 1)), sse({"error": {"message": "engine died"}}), sse(b"[DONE]"))
    reader, rec = read_all([(d, float(i)) for i, d in enumerate(reads_at_event_boundaries(body))])
    assert reader.general is not None
    assert rec.error_kind == "http_5xx" and "engine died" in rec.error


def test_the_reader_sees_done_in_any_read_and_requires_it():
    """Reads as a server's writes arrive: one per event, all events in one read, [DONE] with the
    last usage event and the end of body apart; a body ending without [DONE] is truncated."""
    events = [sse(completion("a", 1)), sse(completion("b", 2)), sse(b"[DONE]")]
    frames = [b"%x\r\n%s\r\n" % (len(e), e) for e in events]
    end = b"0\r\n\r\n"
    for reads in (
        [HEAD, *frames, end],
        [HEAD + frames[0], frames[1] + frames[2], end],
        [HEAD + b"".join(frames) + end],
        [HEAD + frames[0] + frames[1], frames[2] + end],
    ):
        r = ResponseReader("completions")
        for data in reads:
            r.feed(data, 1.0)
        rec = Record(id=0, warmup=False, scheduled=0.0, sent=0.0)
        r.result().fill(rec)
        assert rec.error == "" and rec.completion_tokens == 2, (reads, rec.error)
    r = ResponseReader("completions")
    for data in (HEAD, frames[0], frames[1], end):
        r.feed(data, 1.0)
    rec = Record(id=0, warmup=False, scheduled=0.0, sent=0.0)
    r.result().fill(rec)
    assert rec.error_kind == "truncated" and "[DONE]" in rec.error


def one_read(body: bytes, api: str = "completions") -> tuple[ResponseReader, Record]:
    """A whole response arriving in one read at time 1.0; the reader and its record, checked
    against the general parser's record of the same read."""
    reader = ResponseReader(api)
    assert reader.feed(body, 1.0)
    rec = Record(id=0, warmup=False, scheduled=0.0, sent=0.0)
    reader.fill(rec, count=len)
    _, general = parse(body, api=api)
    assert rec == general
    return reader, rec


def test_a_whole_short_answer_in_one_read_is_counted_without_the_general_parser():
    reader, rec = one_read(BODY)
    assert reader.general is None and reader.keeps_alive
    assert rec.chunk_times == [1.0, 1.0, 1.0] and rec.chunk_tokens == [1, 2, 1]
    assert (rec.first_answer, rec.completion_tokens, rec.prompt_tokens, rec.error) == (1.0, 4, 5, "")


def test_a_chat_answer_in_one_read_begins_after_its_role_chunk():
    def chat(delta, done):
        return {"choices": [{"index": 0, "delta": delta}], "usage": {"prompt_tokens": 3, "completion_tokens": done}}

    events = [chat({"role": "assistant", "content": ""}, 0), chat({"content": "a"}, 1), chat({"content": "b"}, 2)]
    reader, rec = one_read(HEAD + chunked(*(sse(e) for e in events), sse(b"[DONE]")), api="chat")
    assert reader.general is None
    assert rec.chunk_tokens == [1, 1] and rec.first_answer == 1.0


def test_one_read_that_is_not_a_clean_stream_gives_the_general_parsers_record():
    no_text_field = {"choices": [{"index": 0, "thought": "x"}], "usage": {"prompt_tokens": 5, "completion_tokens": 1}}
    _, rec = one_read(HEAD + chunked(sse(completion("a", 1)), sse({"error": {"message": "engine died"}})))
    assert rec.error_kind == "http_5xx"
    _, rec = one_read(HEAD + chunked(*(sse(e) for e in EVENTS[:-1])))
    assert rec.error_kind == "truncated" and "[DONE]" in rec.error
    _, rec = one_read(HEAD + chunked(sse(no_text_field), sse(completion("a", 2)), sse(b"[DONE]")))
    assert rec.error == "" and rec.chunk_tokens == [1, 1]
    closing = BODY.replace(b"chunked\r\n", b"chunked\r\nconnection: close\r\n")
    reader, rec = one_read(closing)
    assert rec.error == "" and not reader.keeps_alive
