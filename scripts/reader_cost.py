"""CPU time the response reader spends per read, on vLLM-shaped chat streams read an event at a time.

The reader runs once per read on the client's busiest path, so a change to it is measured here
before and after (process CPU time, best of 9, so other processes on the host matter little):

    PYTHONPATH=. .venv/bin/python scripts/reader_cost.py            # this checkout
    PYTHONPATH=/path/to/other/checkout .venv/bin/python scripts/reader_cost.py

Streams: 200 answer tokens (plain); the same with vLLM's completion_tokens_details in every usage
(as with a reasoning parser); 150 reasoning tokens then 50 answer tokens, in vLLM's spelling
(reasoning) and SGLang's (reasoning_content). Last, a 2-token answer that arrives whole in one read
(as a short answer does), read and its record filled: the cost behind `just bench-request-cost`.
"""

import time

import orjson

from bench.instrument.reader import ResponseReader
from bench.instrument.records import Record

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
BASE = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m"}


def frame(obj) -> bytes:
    event = b"data: " + orjson.dumps(obj) + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(event), event)


def stream(n: int, reasoning: int = 0, details: bool = False, key: str = "reasoning") -> list[bytes]:
    role = {"index": 0, "delta": {"role": "assistant", "content": ""}}
    reads = [HEAD + frame(BASE | {"choices": [role], "usage": {"prompt_tokens": 100, "completion_tokens": 0}})]
    for i in range(n):
        delta = {key: " tok"} if i < reasoning else {"content": " tok"}
        usage = {"prompt_tokens": 100, "total_tokens": 101 + i, "completion_tokens": i + 1}
        if details:
            usage["completion_tokens_details"] = {"reasoning_tokens": min(i + 1, reasoning)}
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}
        reads.append(frame(BASE | {"choices": [choice], "usage": usage}))
    last = frame(BASE | {"choices": [], "usage": {"prompt_tokens": 100, "completion_tokens": n}})
    reads.append(last + b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n")
    return reads


def ns_per_read(reads: list[bytes], streams: int = 1000, **kw) -> float:
    best = float("inf")
    for _ in range(9):
        t = time.process_time()
        for _ in range(streams):
            reader = ResponseReader("chat", **kw)
            for data in reads:
                reader.feed(data, 1.0)
        best = min(best, (time.process_time() - t) / streams / len(reads))
    assert reader.general is None, "the stream left the fast path"
    return best * 1e9


def us_per_short_answer(answers: int = 20000) -> float:
    """A 2-token answer whole in one read: the read and the record's fill, per answer (us)."""
    data = b"".join(stream(2))
    best = float("inf")
    for _ in range(9):
        t = time.process_time()
        for _ in range(answers):
            reader = ResponseReader("chat")
            reader.feed(data, 1.0)
            rec = Record(id=0, warmup=False, scheduled=0.0, sent=0.0)
            # A checkout before the reader filled records itself went through its general parser.
            reader.fill(rec) if hasattr(reader, "fill") else reader.result().fill(rec)
        best = min(best, (time.process_time() - t) / answers)
    assert rec.completion_tokens == 2 and not rec.error
    return best * 1e6


if __name__ == "__main__":
    cases = {
        "plain": stream(200),
        "plain, usage details": stream(200, 0, True),
        "reasoning 150 of 200": stream(200, 150, True),
        "reasoning_content 150 of 200": stream(200, 150, False, "reasoning_content"),
    }
    for name, reads in cases.items():
        print(f"{name:30s} {ns_per_read(reads):6.0f} ns per read")
    try:  # a tokenizer with think tokens: inline tags are looked for in every read
        print(f"{'plain, inline think tags on':30s} {ns_per_read(cases['plain'], think=True):6.0f} ns per read")
    except TypeError:
        pass  # a checkout from before reasoning labels
    print(f"{'2-token answer in one read':30s} {us_per_short_answer():6.2f} us per answer, read and filled")
