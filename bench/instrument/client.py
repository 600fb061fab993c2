"""The default load transport: HTTP/1.1 + server-sent events on raw sockets, timed by the kernel.

Why not the SDK or aiohttp: a client that cannot keep up reports its own delays as latency.
Over plain http every chunk's arrival time is the kernel's receive stamp (SO_TIMESTAMPNS),
taken when the bytes reached the socket, so reading them later costs no accuracy. That lets
one epoll over all connections (bench.instrument.poller), read from the event loop, rest for NAP
between polls when it is busy, so one wake-up serves many streams: at C=1024 that took about a third off the
kernel time per chunk, and the server's too, since it no longer wakes the client for every
chunk. The cost: two chunks of one stream that arrive within one rest are read together and
share the later stamp (as with any client that reads them together). A request's
send time is taken just before the send() that hands the kernel its last byte. The response
is parsed after it has ended and after this worker's next request has gone out.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from time import perf_counter
from urllib.parse import urlsplit

import orjson

from bench.instrument.client_tls import TlsConnection
from bench.instrument.poller import Connection, Poller
from bench.instrument.reader import ResponseReader
from bench.instrument.records import Record
from bench.instrument.transport import FirstTokenTimeout, TokenCounter

# Timeouts are checked by one sweep over the requests in flight, SWEEP apart (a quarter of the
# shortest timeout when that is less): a timer per request cost ~2 us to set and cancel, and
# asyncio.timeout() per request ~4 us more, while a sweep over 1,000 streams costs ~0.2 ms.
SWEEP = 0.25
# A pooled connection idle this long is closed and replaced instead of reused: servers drop idle
# keep-alive connections (uvicorn, under vLLM, SGLang and TensorRT-LLM's servers, after 5 s), and a
# request written into one the server is closing fails with no byte of a response (seen on the
# CPU engine, when a starved client came back to its pool 5 s later: 9 of 160 requests lost).
STALE = 4.0


def _take(conn) -> tuple[ResponseReader, bool]:
    """The connection's response reader, and whether it can carry another request."""
    reader, conn.reader, conn.done = conn.reader, None, None
    return reader, reader.keeps_alive and not conn.closed


class RawTransport:
    """The Transport protocol (bench.instrument.transport) over a pool of keep-alive connections
    to one server."""

    def __init__(
        self,
        base_url: str,
        api: str,
        headers: dict[str, str],
        count: TokenCounter | None = None,
        connect_timeout: float | None = None,
        first_token_timeout: float | None = None,
        request_timeout: float | None = None,
        think: bool = False,
    ):
        """think: split inline <think> tags in generated text (the tokenizer has them as tokens)."""
        url = urlsplit(base_url.rstrip("/"))
        self.host = url.hostname or "127.0.0.1"
        self.port = url.port or (443 if url.scheme == "https" else 80)
        self.ssl = ssl.create_default_context() if url.scheme == "https" else None
        self.path = f"{url.path}/{'chat/completions' if api == 'chat' else 'completions'}"
        self.api, self.count, self.think = api, count, think
        self.connect_timeout, self.first_token_timeout = connect_timeout, first_token_timeout
        # With a request timeout given, this transport enforces it (raising TimeoutError), so the
        # runner need not wrap every request in asyncio.timeout().
        self.request_timeout = self.times_whole_request = request_timeout
        limits = [t for t in (first_token_timeout, request_timeout) if t is not None]
        self._sweep_every = min([SWEEP, *(t / 4 for t in limits)]) if limits else None
        self._busy: dict = {}  # connection -> its request's send time, while the request is in flight
        self._sweeper: asyncio.Handle | None = None
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self._head = (
            f"POST {self.path} HTTP/1.1\r\nHost: {url.netloc.rpartition('@')[2]}\r\n"
            f"Content-Type: application/json\r\nAccept: text/event-stream\r\n{extra}"
        )
        self._idle: list = []
        self._poller: Poller | None = None
        self._addr: tuple | None = None
        # request id -> the raw bytes of its response, for those who need the text (sessions); None: keep none
        self.kept: dict[str, list[bytes]] | None = None

    async def _open(self):
        if self.ssl is not None:
            conn = await TlsConnection.open(self.host, self.port, self.ssl, self.connect_timeout)
        else:
            loop = asyncio.get_running_loop()
            if self._poller is None:
                self._poller = Poller(loop)
            if self._addr is None:
                infos = await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
                self._addr = infos[0][4]
            conn = await Connection.open(self._addr, self._poller, self.connect_timeout)
        conn.idle_since = perf_counter()
        return conn

    def _pooled(self):
        """The newest pooled connection that is open and not STALE (closing those passed over); None
        when there is none. Not a coroutine: a pooled request costs no extra await."""
        idle, now = self._idle, perf_counter()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < STALE:
                return conn
            conn.close()
        return None

    async def preconnect(self, n: int) -> None:
        """Open `n` idle connections now, so connection set-up is not timed as latency."""
        missing = max(0, n - len(self._idle))
        if missing:
            self._idle.append(await self._open())  # resolves the address once, then the rest at once
            self._idle.extend(await asyncio.gather(*(self._open() for _ in range(missing - 1))))

    def prepare(self, body: dict, request_id: str) -> bytes:
        """The request's bytes, encoded ahead of time (before timing starts, where the runner can)."""
        payload = orjson.dumps(body)
        head = f"{self._head}X-Request-Id: {request_id}\r\nContent-Length: {len(payload)}\r\n\r\n"
        return head.encode() + payload

    async def send(self, body: dict | bytes, request_id: str, rec: Record):
        """Send one request (a body, or the bytes `prepare` made of it) and wait for its end;
        return (end time, a function that fills `rec`).

        The fill (parsing) is left to the caller so that it can send its next request first.
        Times in `rec` are absolute perf_counter values.
        """
        data = body if type(body) is bytes else self.prepare(body, request_id)
        conn = self._pooled() or await self._open()
        done = conn.start(self.api, self.think)
        if self.kept is not None:
            conn.reader.raw = self.kept[request_id] = []
        busy = self._busy
        try:
            t, n = conn.write(data)
            busy[conn] = t  # timed from the first byte while the rest drains, then from the send
            if self._sweeper is None and self._sweep_every is not None:
                self._sweeper = asyncio.get_running_loop().call_later(self._sweep_every, self._sweep)
            if n < len(data):  # rare (a body larger than the socket buffer): a server that never reads it times out
                async with asyncio.timeout(self.request_timeout):
                    t = busy[conn] = await conn.write_rest(data, n)
            rec.sent = t
            end = await done
        except BaseException:
            busy.pop(conn, None)
            conn.close()  # a half-read response poisons the connection
            reader, _ = _take(conn)
            reader.fill(rec, self.count)
            raise
        del busy[conn]
        reader, reusable = _take(conn)
        end = end if end is not None else perf_counter()
        if reusable:
            conn.idle_since = end
            self._idle.append(conn)
        else:
            conn.close()
        return end, lambda: reader.fill(rec, self.count)

    def pending(self) -> int:
        """Responses that ended but whose requests have not been woken yet (poller.WAKE_PER_READ a poll)."""
        return len(self._poller.ended) if self._poller is not None else 0

    def _sweep(self) -> None:
        """Fail the requests in flight that passed a timeout; again SWEEP later while any are."""
        now, first, whole = perf_counter(), self.first_token_timeout, self.request_timeout
        for conn, sent in list(self._busy.items()):
            done = conn.done
            if done is None or done.done():
                continue
            if whole is not None and now - sent > whole:
                done.set_exception(TimeoutError(f"no complete response within {whole:g} s"))
            elif first is not None and now - sent > first and not conn.reader.has_content:
                done.set_exception(FirstTokenTimeout(f"no generated text within {first:g} s of the send"))
        self._sweeper = asyncio.get_running_loop().call_later(self._sweep_every, self._sweep) if self._busy else None

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conn in self._idle:
            conn.close()
        self._idle.clear()
        if self._poller is not None:
            self._poller.close()
            self._poller = None
