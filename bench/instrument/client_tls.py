"""The raw transport's connection for https: an asyncio protocol over TLS.

Chunks are stamped when the event loop hands them over (a TLS record must be decrypted before
its events can be read), so a busy client adds its delays here; plain http (bench/client.py)
takes the kernel's arrival times instead.
"""

from __future__ import annotations

import asyncio
import socket
from time import perf_counter

from bench.instrument.reader import ResponseReader
from bench.instrument.transport import ConnectTimeout


class TlsConnection(asyncio.Protocol):
    """One keep-alive TLS connection carrying one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.reader: ResponseReader | None = None
        self.done: asyncio.Future | None = None
        self.closed = False

    @classmethod
    async def open(cls, host: str, port: int, ssl, timeout: float | None = None) -> TlsConnection:
        try:
            async with asyncio.timeout(timeout):
                _, conn = await asyncio.get_running_loop().create_connection(cls, host, port, ssl=ssl)
        except TimeoutError:
            raise ConnectTimeout(f"no connection to {host}:{port} within {timeout:g} s") from None
        return conn

    def connection_made(self, transport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def start(self, api: str, think: bool = False) -> asyncio.Future:
        self.reader = ResponseReader(api, think)
        self.done = asyncio.get_running_loop().create_future()
        return self.done

    def write(self, data: bytes) -> tuple[float, int]:
        """Hand the request to TLS, which encrypts and sends what the socket takes: the send time,
        and every byte taken (the transport buffers what the socket does not take yet)."""
        t = perf_counter()
        self.transport.write(data)
        return t, len(data)

    def data_received(self, data: bytes) -> None:
        t = perf_counter()  # first: the arrival time must not include our own work
        if self.reader is not None and self.reader.feed(data, t):
            self._end(t)

    def _end(self, t: float | None) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_result(t)

    def connection_lost(self, exc) -> None:
        self.closed = True
        if self.reader is not None:
            self.reader.connection_closed(reset=exc is not None)
        self._end(None)  # the parse decides whether the response was complete

    def close(self) -> None:
        self.closed = True
        self.transport.close()
