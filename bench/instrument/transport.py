"""What a load transport is: given a server, an endpoint and a token counter; sends one request
at a time per call and hands back when it ended and how to fill its record.

Two transports implement it: RawTransport (bench.instrument.client: raw sockets, kernel
receive stamps over plain http) and OpenAITransport (bench.instrument.client_openai: the SDK,
to cross-check what an application sees); bench.instrument.measure opens the one a spec names.
The runner knows only this protocol.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from bench.instrument.records import Record

# Tokens in a text: counts chunks whose token count the server did not report.
TokenCounter = Callable[[str], int]


class ConnectTimeout(Exception):
    """No connection to the server within the connect timeout."""


class FirstTokenTimeout(Exception):
    """No generated text within the first-token timeout of the send."""


class Transport(Protocol):
    async def preconnect(self, n: int) -> None:
        """Open `n` connections before timing starts (a no-op where the transport pools itself)."""

    async def send(self, body: dict, request_id: str, rec: Record) -> tuple[float, Callable[[], None]]:
        """Send one streamed request and wait for its end. Sets `rec.sent` (just before the bytes
        go out) and returns (end time, fill): calling `fill()` later parses the response into
        `rec` (times as absolute perf_counter values), so the caller can send its next request
        first. Raises ConnectTimeout or FirstTokenTimeout when those limits pass, OSError when
        the connection fails (ConnectionResetError/BrokenPipeError: reset; others: no server);
        when it raises it may first fill `rec` with what arrived."""
        ...

    async def close(self) -> None:
        """Close every connection."""
