"""One record per request, appended to requests.jsonl a moment after the request ends.

The moment is bench.instrument.runner.DEFER (a quarter second; none under --until-steady): out
of the rush when many streams end together, soon enough that a killed client loses almost
nothing finished.

Times are seconds on the client's `time.perf_counter()` clock (CLOCK_MONOTONIC on Linux,
shared by every process on the host), measured from the run's `t0`, which the manifest
keeps beside the wall-clock start. Raw timestamps are stored, never derived numbers, so
any metric can be recomputed from this file alone.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO

import orjson

# Why a request failed: a closed list (Record.error_kind), one explanation each. Imported
# results (bench import) keep "vllm-bench": the client that sent them did not say why.
ERROR_KINDS = {
    "http_429": "the server turned the request away as over its rate limit (HTTP 429)",
    "http_4xx": "the server refused the request (HTTP 4xx other than 429)",
    "http_5xx": "the server failed (HTTP 5xx, or an error event inside the stream)",
    "reset": "the connection was reset while the request was in flight",
    "server_gone": "no server took the connection (refused or unreachable)",
    "timeout_connect": "no connection within --connect-timeout",
    "timeout_first_token": "no generated text within --first-token-timeout of the send",
    "timeout_total": "no complete response within --request-timeout",
    "malformed": "the response was not a well-formed stream (an unparseable event, an unexpected status)",
    "truncated": "the stream ended before it finished, or finished without generated text",
    "interrupted": "the run was stopped (Ctrl-C, SIGTERM) before the request finished: not the server's doing",
}


def http_error_kind(status: int) -> str:
    """The error kind of a response with this HTTP status (not 200)."""
    if status == 429:
        return "http_429"
    return "http_4xx" if 400 <= status < 500 else "http_5xx" if status >= 500 else "malformed"


@dataclass
class Record:
    id: int  # position in the run's schedule (warm-up requests come first)
    warmup: bool  # True for warm-up requests, which the statistics leave out
    scheduled: float  # when the schedule wanted the request sent
    sent: float  # when the request bytes were handed to the socket
    first: float | None = None  # arrival of the first chunk that carries generated text
    last: float | None = None  # arrival of the last chunk that carries generated text
    chunk_times: list[float] = field(default_factory=list)  # arrival of each content chunk
    chunk_tokens: list[int] = field(default_factory=list)  # tokens in each content chunk
    prompt_tokens: int | None = None  # server's usage.prompt_tokens
    completion_tokens: int | None = None  # server's usage.completion_tokens
    usage_source: str = "server"  # "server", or "counted" when the server sent no usage
    input_len: int | None = None  # prompt length the workload asked for, in tokens
    output_len: int | None = None  # output length asked for (max_tokens), None if free
    status: int = 0  # HTTP status; 0 when no response arrived
    error: str = ""  # empty for success, else what went wrong, in one line
    error_kind: str = ""  # short class of the error: http_4xx, http_5xx, timeout, ...
    worker: int = 0  # client worker process that sent it
    session: int | None = None  # session workloads: the conversation this request is a turn of
    turn: int | None = None  # session workloads: its turn in that conversation, from 0
    # Reasoning models (bench.instrument.reasoning says how chunks are labelled). A run without
    # reasoning has first_answer == first and reasoning_tokens 0; records older than these fields
    # (and imports) have None.
    first_reasoning: float | None = None  # arrival of the first chunk carrying reasoning text
    first_answer: float | None = None  # arrival of the first content chunk that is not reasoning
    reasoning_tokens: int | None = None  # usage.completion_tokens_details.reasoning_tokens, else counted
    reasoning_source: str = ""  # "server", or "counted": the tokens of the chunks labelled reasoning
    # how chunk_tokens were found: "usage" (the server's, per chunk), else bench.instrument.chunk_tokens's
    # "one_each", "tokenizer", "fitted" or "unmatched" (the server reported usage only at the end, or none)
    chunk_tokens_source: str = ""

    @property
    def ok(self) -> bool:
        return not self.error

    def to_json(self) -> bytes:
        return orjson.dumps(self)  # ~20x faster than json.dumps(asdict()): it runs between chunks

    @classmethod
    def from_dict(cls, d: dict) -> Record:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


class RecordWriter:
    """Appends one JSON line per record and flushes it, so a crash loses nothing finished."""

    def __init__(self, path: str | os.PathLike):
        self._f: IO[bytes] = open(path, "ab")

    def write(self, rec: Record) -> None:
        self.write_many([rec])

    def write_many(self, recs: list[Record]) -> None:
        self._f.write(b"".join(rec.to_json() + b"\n" for rec in recs))
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def read_records(path: str | os.PathLike) -> Iterator[Record]:
    """Read requests.jsonl; a torn last line (a killed writer) is skipped, not fatal."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                yield Record.from_dict(json.loads(line))
            except json.JSONDecodeError:
                continue
