"""The default load transport: HTTP/1.1 + server-sent events on raw asyncio protocols.

Why not the SDK or aiohttp: every microsecond the client spends per chunk is added to the
latencies it reports once many streams are in flight. Here a chunk costs one timestamp and
one list append in `data_received`; the response is parsed once, after it has ended and
after this worker's next request has gone out (see bench/stream.py for the parsing). A
request's send time is taken after its bytes were handed to the socket.
"""
from __future__ import annotations

import asyncio
import socket
import ssl
from time import perf_counter
from urllib.parse import urlsplit

import orjson

from bench.records import Record
from bench.reader import ResponseReader


class _Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.reader: ResponseReader | None = None
        self.done: asyncio.Future | None = None
        self.closed = False

    def connection_made(self, transport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def start(self, api: str) -> asyncio.Future:
        self.reader = ResponseReader(api)
        self.done = asyncio.get_running_loop().create_future()
        return self.done

    def data_received(self, data: bytes) -> None:
        t = perf_counter()  # first: the arrival time must not include our own work
        if self.reader is not None and self.reader.feed(data, t):
            self._end(t)

    def _end(self, t: float | None) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_result(t)

    def connection_lost(self, exc) -> None:
        self.closed = True
        if self.reader is not None and self.reader.general is not None and self.reader.general.until_close:
            self.reader.general.finished = True  # a body delimited by the connection's end
        self._end(None)  # the parse decides whether the response was complete

    def take(self) -> tuple[ResponseReader, bool]:
        """This response's reader, and whether the connection can carry another request."""
        reader, self.reader, self.done = self.reader, None, None
        keep = reader.general.keep_alive if reader.general is not None else reader.keep_alive
        return reader, keep and not self.closed


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

    async def send(self, body: dict, request_id: str, rec: Record):
        """Send one request and wait for its end; return (end time, a function that fills `rec`).

        The fill (parsing) is left to the caller so that it can send its next request first.
        Times in `rec` are absolute perf_counter values.
        """
        payload = orjson.dumps(body)
        head = f"{self._head}X-Request-Id: {request_id}\r\nContent-Length: {len(payload)}\r\n\r\n"
        conn = await self._connection()
        done = conn.start(self.api)
        conn.transport.write(head.encode() + payload)
        rec.sent = perf_counter()
        try:
            end = await done
        except BaseException:
            conn.transport.close()  # a half-read response poisons the connection
            conn.closed = True
            reader, _ = conn.take()
            reader.result().fill(rec, self.count)
            raise
        reader, reusable = conn.take()
        if reusable:
            self._idle.append(conn)
        else:
            conn.transport.close()
        return (end if end is not None else perf_counter()), lambda: reader.result().fill(rec, self.count)

    async def close(self) -> None:
        for conn in self._idle:
            conn.transport.close()
        self._idle.clear()
