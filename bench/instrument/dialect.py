"""What the client may send each engine, as data: one row per engine whose OpenAI-compatible API
refuses or ignores a field the client would otherwise send. A new engine is a new row.

The engine is the one the serve recipe recorded (bench.instrument.served, `--engine` of the launcher);
a server without a record gets the default row, and the probe says so in one sentence if the server
then refuses a field (bench.instrument.probe). What the client reads back needs no row: the stream
parser takes usage per chunk or only at the end, and a stream closed by its finish_reason without
`data: [DONE]`, from any server (bench.instrument.stream).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Dialect:
    ignore_eos: bool = True  # accepts `ignore_eos`; else the request is refused, so it is never sent
    stream_options: bool = True  # reads `stream_options` (per-chunk usage); else it is left out of requests


DEFAULT = Dialect()
DIALECTS = {
    # Transformers' `transformers serve` (5.19) answers HTTP 422 "Unexpected fields in the request:
    # {'ignore_eos'}"; it ignores stream_options with a log line per request and sends usage only in the
    # last chunk. Exact output lengths come from the served model's config instead: EOS switched off
    # (scripts/make_weights.py), and the length check counts any request that stopped early.
    "transformers": Dialect(ignore_eos=False, stream_options=False),
}


def of(engine: str | None) -> Dialect:
    """The row for `engine` (as a serve record names it); the default for any other or none."""
    return DIALECTS.get(engine or "", DEFAULT)
