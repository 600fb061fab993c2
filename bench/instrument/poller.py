"""One epoll over every plain connection of a client process, and the connections it reads.

A connection carries one request at a time; each read is stamped by the kernel (SO_TIMESTAMPNS)
and fed to the request's ResponseReader; a response's end is handed to the waiting request a
few hundred per poll (bench.instrument.client says why reading this way keeps the stamps exact).
"""

from __future__ import annotations

import asyncio
import select
import socket
from collections import deque
from time import perf_counter

from bench.instrument.kernel_clock import ANC_SPACE, SO_TIMESTAMPNS, arrival, realtime_offset
from bench.instrument.reader import ResponseReader
from bench.instrument.transport import ConnectTimeout

READ_SIZE = 1 << 12
# Under load the poller rests NAP between polls; chunks are stamped by the kernel meanwhile,
# and only noticing a response's end (so the next request of a closed loop) waits. It rests
# once at least BUSY sockets turn ready per NAP: below that a wake-up per chunk is cheap, and
# two chunks of one stream closer than NAP would be read together, sharing a stamp.
NAP = 1e-3  # asyncio and uvloop timers round to ~1 ms anyway
BUSY = 16
# Responses whose end a poll found wake at most WAKE_PER_READ workers before the next poll;
# the rest wait their turn in `ended`. Each woken worker sends its next request and records
# the last (~47 us), so when ~750 streams ended in one poll the loop went 20-30 ms without
# reading, and two chunks of one stream met in a socket, sharing the later one's kernel stamp
# (the first 20 ms late; 194-348 chunks in some runs at C=1024). 256 workers take ~12 ms, less
# than an inter-token gap, and reading (~10 us a chunk) never waits longer.
WAKE_PER_READ = 256


class Poller:
    """One epoll over every plain connection, read from the event loop.

    Idle or lightly loaded, the event loop wakes it whenever a socket is readable. Once BUSY
    sockets turned ready within one NAP it polls on a timer every NAP instead, so each wake-up
    serves many streams, until a poll finds none ready. Staying on the timer through the
    quieter moments of a busy run also spares the server a wake-up of this process per chunk
    (at C=1024 its send lag p99 fell from ~11 to ~6 ms, side by side).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop, self.ep = loop, select.epoll()
        self.conns: dict[int, Connection] = {}
        self.window, self.ready = 0.0, 0  # sockets found ready since `window` began
        self.timer: asyncio.Handle | None = None  # set while polling on the timer
        self.ended: deque = deque()  # connections whose response ended, not handed over yet
        loop.add_reader(self.ep.fileno(), self._woken)

    def add(self, conn: Connection) -> None:
        self.conns[conn.fd] = conn
        self.ep.register(conn.fd, select.EPOLLIN)

    def remove(self, conn: Connection) -> None:
        if self.conns.pop(conn.fd, None) is not None:
            self.ep.unregister(conn.fd)

    def _read(self) -> int:
        base, offset = realtime_offset()
        conns = self.conns
        events = self.ep.poll(0)
        for fd, _ in events:
            conn = conns.get(fd)
            if conn is not None:
                conn.readable(base, offset)
        ended = self.ended
        for _ in range(min(len(ended), WAKE_PER_READ)):
            conn = ended.popleft()
            conn._end(conn.ending)
        return len(events)

    def _woken(self) -> None:
        now = perf_counter()
        if now - self.window > NAP:
            self.window, self.ready = now, 0
        self.ready += self._read()
        if self.ready >= BUSY or self.ended:
            self.loop.remove_reader(self.ep.fileno())
            self.timer = self.loop.call_soon(self._tick) if self.ended else self.loop.call_later(NAP, self._tick)

    def _tick(self) -> None:
        n = self._read()
        if self.ended:  # workers still to wake: after the ones just woken, not after a rest
            self.timer = self.loop.call_soon(self._tick)
        elif n:
            self.timer = self.loop.call_later(NAP, self._tick)
        else:
            self.timer = None
            self.window, self.ready = perf_counter(), 0
            self.loop.add_reader(self.ep.fileno(), self._woken)

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        else:
            self.loop.remove_reader(self.ep.fileno())
        self.ep.close()


class Connection:
    """One keep-alive plain connection carrying one request at a time."""

    def __init__(self, sock: socket.socket, poller: Poller):
        self.sock, self.fd, self.poller, self.loop = sock, sock.fileno(), poller, poller.loop
        self.recvmsg = sock.recvmsg
        self.reader: ResponseReader | None = None
        self.done: asyncio.Future | None = None
        self.ending: float | None = None  # the end's stamp, once the response is complete
        self.closed = False
        poller.add(self)

    @classmethod
    async def open(cls, addr: tuple, poller: Poller, timeout: float | None) -> Connection:
        sock = socket.socket(socket.AF_INET6 if ":" in addr[0] else socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            async with asyncio.timeout(timeout):
                await poller.loop.sock_connect(sock, addr)
        except TimeoutError:
            sock.close()
            raise ConnectTimeout(f"no connection to {addr[0]}:{addr[1]} within {timeout:g} s") from None
        except BaseException:
            sock.close()
            raise
        return cls(sock, poller)

    def start(self, api: str, think: bool = False) -> asyncio.Future:
        self.reader, self.ending = ResponseReader(api, think), None
        self.done = self.loop.create_future()
        return self.done

    def write(self, data: bytes) -> tuple[float, int]:
        """Send a request; return its send time, taken just before the send() that hands the
        kernel its last byte, and the bytes sent. Before, not after: the send wakes the server,
        and on a busy host the scheduler may run the server first and this process hundreds of
        ms later, after the answer has begun (seen on the CPU engine, where engine and client
        share 2 cores). Not a coroutine: the whole request almost always goes in one send()."""
        t = perf_counter()
        try:
            return t, self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            return t, 0

    async def write_rest(self, data: bytes, n: int) -> float:
        """More than the socket buffer took at once: the rest as it drains; the send time."""
        await self.loop.sock_sendall(self.sock, memoryview(data)[n:])
        return perf_counter()

    def readable(self, base: int, offset: float) -> None:
        try:
            data, anc, _, _ = self.recvmsg(READ_SIZE, ANC_SPACE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # ECONNRESET and the like: the peer reset the connection
            return self._lost(reset=True)
        if not data:
            return self._lost()
        t = arrival(anc, base, offset) or perf_counter()
        reader = self.reader
        if reader is None:  # bytes nobody asked for: this connection cannot be trusted again
            return self._lost()
        if reader.feed(data, t):
            self.ending = t
            self.poller.ended.append(self)

    def _end(self, t: float | None) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_result(t)

    def _lost(self, reset: bool = False) -> None:
        self.close()
        if self.reader is not None:
            self.reader.connection_closed(reset)
        self._end(self.ending)  # the parse decides whether the response was complete

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.poller.remove(self)
            self.sock.close()
