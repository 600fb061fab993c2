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
from bench.stream import FastStream, StreamParser, is_streaming_head

END = b"\r\n0\r\n\r\n"  # the last data chunk's CRLF and the zero-size chunk that ends the body


class _Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.pieces: list[tuple[bytes, float]] | None = None  # (bytes, arrival time) of this response
        self.parser: StreamParser | None = None  # only for responses that are not a 200 chunked stream
        self.fast: FastStream | None = None      # the common case, counted as it arrives
        self.done: asyncio.Future | None = None
        self.closed = False

    def connection_made(self, transport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def start(self, api: str) -> asyncio.Future:
        self.pieces, self.parser, self.fast = [], None, FastStream()
        self.api = api
        self.done = asyncio.get_running_loop().create_future()
        return self.done

    def data_received(self, data: bytes) -> None:
        t = perf_counter()  # first: the arrival time must not include our own work
        pieces = self.pieces
        if pieces is None:
            return
        pieces.append((data, t))  # kept for the general parser, should the fast path not hold
        if self.parser is None and len(pieces) == 1 and not is_streaming_head(data):
            self.parser = StreamParser(self.api)  # an error or unusual response: parse as it comes
        if self.parser is not None:
            self.parser.feed(data, t)
            if self.parser.finished:
                self._end(t)
            return
        if len(pieces) == 1:
            data = data[data.find(b"\r\n\r\n") + 4:]  # the head, checked above
        fast = self.fast
        if fast.ok:
            fast.read(data, t)
        if data.endswith(END) or (len(data) < len(END) and b"".join(p for p, _ in pieces[-2:]).endswith(END)):
            self._end(t)

    def _end(self, t: float | None) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_result(t)

    def connection_lost(self, exc) -> None:
        self.closed = True
        self._end(None)  # the parse decides whether the response was complete

    def take(self):
        """This response's raw pieces, its fast count, and whether the connection can be reused."""
        pieces, fast = self.pieces, self.fast
        self.pieces, self.parser, self.done, self.fast = None, None, None, None
        head = pieces[0][0][:pieces[0][0].find(b"\r\n\r\n")].lower() if pieces else b""
        return pieces, fast, not self.closed and b"connection: close" not in head


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
            pieces, fast, _ = conn.take()
            self._fill(pieces, fast, rec)
            raise
        pieces, fast, reusable = conn.take()
        if reusable:
            self._idle.append(conn)
        else:
            conn.transport.close()
        return (end if end is not None else perf_counter()), lambda: self._fill(pieces, fast, rec)

    def _fill(self, pieces: list[tuple[bytes, float]], fast: FastStream | None, rec: Record) -> None:
        StreamParser.from_pieces(self.api, pieces, fast).fill(rec, self.count)

    async def close(self) -> None:
        for conn in self._idle:
            conn.transport.close()
        self._idle.clear()
