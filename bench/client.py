"""The default load transport: HTTP/1.1 + server-sent events on raw asyncio protocols.

Why not the SDK or aiohttp: every microsecond the client spends per chunk is added to the
latencies it reports once many streams are in flight. Here a chunk costs one timestamp, a
scan for the SSE frame end and one orjson parse; the arrival time is taken first thing in
`data_received`, and a request's send time is taken after its bytes were written.
"""
from __future__ import annotations

import asyncio
import socket
import ssl
from time import perf_counter
from urllib.parse import urlsplit

import orjson

from bench.records import Record
from bench.stream import StreamParser


class _Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser: StreamParser | None = None
        self.done: asyncio.Future | None = None
        self.closed = False
        self.pending: list[tuple[bytes, float]] = []  # (bytes, arrival time) not yet parsed

    def connection_made(self, transport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        # Only stamp and queue here: when many sockets are ready in one loop iteration, each
        # is stamped within microseconds of the others, and parsing runs after all of them.
        self.pending.append((data, perf_counter()))
        if len(self.pending) == 1:
            asyncio.get_running_loop().call_soon(self._parse)

    def _parse(self) -> None:
        pending, self.pending = self.pending, []
        parser = self.parser
        if parser is None:
            return
        for data, t in pending:
            parser.feed(data, t)
        if parser.finished and self.done is not None and not self.done.done():
            self.done.set_result(t)

    def connection_lost(self, exc) -> None:
        self._parse()
        self.closed = True
        if self.done is not None and not self.done.done():
            if self.parser is not None and self.parser.until_close:
                self.parser.finished = True
                self.done.set_result(perf_counter())
            else:
                self.done.set_exception(ConnectionError("the server closed the connection mid-response"))


class RawTransport:
    """Streams completions over a pool of keep-alive connections to one server."""

    name = "raw"
    count = None  # tokenizer-based counter for chunks without per-chunk usage (set by the runner)

    def __init__(self, base_url: str, api: str, headers: dict[str, str]):
        url = urlsplit(base_url.rstrip("/"))
        self.host = url.hostname or "127.0.0.1"
        self.port = url.port or (443 if url.scheme == "https" else 80)
        self.ssl = ssl.create_default_context() if url.scheme == "https" else None
        self.path = f"{url.path}/{'chat/completions' if api == 'chat' else 'completions'}"
        self.api = api
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self._head = (f"POST {self.path} HTTP/1.1\r\nHost: {url.netloc}\r\n"
                      f"Content-Type: application/json\r\nAccept: text/event-stream\r\n{extra}")
        self._idle: list[_Connection] = []

    async def _connection(self) -> _Connection:
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                return conn
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(_Connection, self.host, self.port, ssl=self.ssl)
        return conn

    async def preconnect(self, n: int) -> None:
        """Open `n` idle connections now, so connection set-up is not timed as latency."""
        loop = asyncio.get_running_loop()
        missing = max(0, n - len(self._idle))
        opened = await asyncio.gather(*(loop.create_connection(_Connection, self.host, self.port, ssl=self.ssl)
                                        for _ in range(missing)))
        self._idle.extend(conn for _, conn in opened)

    async def send(self, body: dict, request_id: str, rec: Record) -> float:
        """Send one request, fill `rec` with absolute perf_counter times; return its end time."""
        payload = orjson.dumps(body)
        head = f"{self._head}X-Request-Id: {request_id}\r\nContent-Length: {len(payload)}\r\n\r\n"
        conn = await self._connection()
        conn.parser = StreamParser(self.api)
        conn.done = asyncio.get_running_loop().create_future()
        conn.transport.write(head.encode() + payload)
        rec.sent = perf_counter()
        try:
            end = await conn.done
        except BaseException:
            conn.transport.close()  # a half-read response poisons the connection
            conn.closed = True
            conn.parser.fill(rec, self.count)
            raise
        conn.parser.fill(rec, self.count)
        if conn.parser.keep_alive and not conn.closed:
            conn.parser, conn.done = None, None
            self._idle.append(conn)
        else:
            conn.transport.close()
        return end

    async def close(self) -> None:
        for conn in self._idle:
            conn.transport.close()
        self._idle.clear()
