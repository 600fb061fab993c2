"""The calibration server's HTTP side: a minimal HTTP/1.1 server and the paced stream writer.

Raw non-blocking sockets on the asyncio loop, no web framework: the per-chunk cost is one
clock read, one array append and one send() of bytes encoded when the request arrived.
Responses mirror vLLM behind uvicorn: keep-alive, streams in Transfer-Encoding: chunked, one
SSE event per HTTP chunk.
"""

from __future__ import annotations

import itertools
import os
import socket
import struct
import time
from array import array

import orjson

from bench import __version__
from bench.instrument.kernel_clock import (
    ANC_SPACE,
    SO_TIMESTAMPNS,
    arrival,
    realtime_offset,
)
from bench.lab.calibration_faults import HEADER, STATUS
from bench.lab.calibration_metrics import CONTENT_TYPE as METRICS_TYPE
from bench.lab.calibration_openai import BadRequest, encode, error_body, parse_request
from bench.lab.calibration_reasoning import first_answer_chunk

MAX_HEAD, MAX_BODY = 65536, 64 << 20
BAD_EVENT = b"data: {not json\n\n"  # the injected malformed event
_ids = itertools.count(1)
perf_counter = time.perf_counter


def response(status: int, body: bytes, extra: str = "", ctype: str = "application/json") -> bytes:
    reason = {
        200: "OK",
        400: "Bad Request",
        404: "Not Found",
        405: "Method Not Allowed",
        411: "Length Required",
        413: "Payload Too Large",
        429: "Too Many Requests",
        431: "Header Too Large",
        500: "Internal Server Error",
        503: "Service Unavailable",
    }[status]
    return (
        f"HTTP/1.1 {status} {reason}\r\nserver: bench-calibration\r\n"
        f"content-type: {ctype}\r\n"
        f"content-length: {len(body)}\r\n{extra}\r\n"
    ).encode("latin-1") + body


class Stream:
    """One response on its schedule (chunk i due at first + i * itl), logging when it ends.

    Middle chunks are one pre-encoded bytes object (`plain`); `edge(i)` encodes the others: the
    first (chat's role chunk travels with it), the last (finish_reason) and, with continuous
    usage stats, every chunk. `tail` (usage, [DONE], end of body) goes in the same send() as
    the last chunk: when a thousand streams end at once, one send each instead of two.
    """

    __slots__ = (
        "conn",
        "sched",
        "entry",
        "prefix",
        "i",
        "last",
        "first",
        "itl",
        "plain",
        "edge",
        "tail",
        "sent",
        "sent_append",
        "write",
        "dead",
        "fault",
        "fault_at",
    )

    def __init__(
        self,
        conn: Conn,
        entry: dict,
        first: float,
        itl: float,
        chunks: int,
        plain: bytes | None,
        edge,
        tail: bytes = b"",
        fault: str | None = None,
    ):
        self.conn, self.sched, self.entry = conn, conn.sched, entry
        self.fault, self.fault_at = fault, chunks // 2  # an injected fault strikes at the middle chunk
        # The log line's fixed part, encoded now rather than when many streams end together.
        self.prefix = orjson.dumps(entry)[:-1] + b","
        self.i, self.last, self.first, self.itl = 0, chunks - 1, first, itl
        self.plain, self.edge, self.tail, self.dead = plain, edge, tail, False
        # Doubles in one array, not float objects scattered over the heap: the log line is
        # written in the busiest moment (many streams ending at once), and that is cheaper.
        self.sent = array("d")
        self.sent_append = self.sent.append
        self.write = conn.write

    def send(self, due: float) -> float | None:
        """Write the next chunk (due at `due`); return when the one after is due, None when done."""
        if self.dead:
            return None
        i = self.i
        if i == self.fault_at and self.fault:
            return self.strike(due)
        frame = self.plain if 0 < i < self.last and self.plain else self.edge(i)
        if i < self.last:
            self.sent_append(perf_counter())
            self.write(frame)
            self.i = i + 1
            return self.first + self.i * self.itl
        frame += self.tail
        self.sent_append(perf_counter())
        self.write(frame)
        self.finish()
        self.sched.loop.call_soon(self.conn.done)  # not now: the scheduler owns the heap
        return None

    def strike(self, due: float) -> float | None:
        """Do the injected fault at this chunk (bench.lab.calibration_faults says what each is)."""
        fault, self.fault = self.fault, None
        if fault == "malformed":  # an event no parser can read, then the stream goes on
            self.write(b"%x\r\n%s\r\n" % (len(BAD_EVENT), BAD_EVENT))
            return due
        if fault == "early_end":  # a clean end of the body: no usage, no [DONE]
            self.write(b"0\r\n\r\n")
            self.finish(f"fault {fault}")
            self.sched.loop.call_soon(self.conn.done)
        elif fault == "truncated":  # half an event, then the connection closes
            frame = self.plain if 0 < self.i < self.last and self.plain else self.edge(self.i)
            self.write(frame[: len(frame) // 2])
            self.conn.close(f"fault {fault}")
        elif fault == "reset":
            self.conn.reset(f"fault {fault}")
        else:  # stall: nothing more, the connection stays open until the client gives up
            self.finish(f"fault {fault}")
        return None

    def finish(self, error: str = "") -> None:
        if self.dead:
            return
        self.dead = True
        # Chunk i was due at due_first + i * due_step (read_log spells the list out).
        times = {"due_first": self.first, "due_step": self.itl, "sent": self.sent.tolist()}
        if error:  # cut short: tokens only for the chunks that went
            entry = self.entry
            entry.update(times, error=error, tokens=entry["tokens"][: len(self.sent)])
            line = orjson.dumps(entry)
            self.conn.info["counts"].ended(sum(entry["tokens"]))
        else:
            line = self.prefix + orjson.dumps(times)[1:]
            self.conn.info["counts"].ended(self.entry["completion_tokens"])
        self.sched.finished(self, line + b"\n")


def start_request(conn: Conn, body: dict, chat: bool, rid: str, received: float, fault: str | None = None) -> None:
    """Plan the chunks, encode their bytes once and hand the stream to the scheduler."""
    plan = parse_request(body, chat, conn.info)
    if slope := conn.info.get("per_stream"):  # a server that slows with load, along a known line
        others = len(conn.sched.active)  # streams in flight when this one arrived, itself not counted
        plan.ttft += slope[0] * others
        plan.itl += slope[1] * others
    tokens = plan.tokens if plan.stream else [plan.max_tokens]
    entry = {
        "id": rid,
        "received": received,
        "parsed": perf_counter(),
        "tokens": tokens,
        "prompt_tokens": plan.prompt,
        "completion_tokens": plan.max_tokens,
        "stream": plan.stream,
        "api": "chat" if chat else "completions",
        "ttft_ms": plan.ttft * 1e3,
        "itl_ms": plan.itl * 1e3,
        "tokens_per_chunk": plan.k,
    }
    if plan.reasoning:  # the truth of TTFO: chunk `first_answer_chunk` carried the first answer token
        k = plan.k if plan.stream else plan.max_tokens
        entry |= {"reasoning_tokens": min(plan.reasoning, plan.max_tokens), "reasoning_field": plan.field}
        entry["first_answer_chunk"] = first_answer_chunk(plan.max_tokens, k, plan.reasoning)
    fault = fault if plan.stream else None  # stream faults need a stream
    if fault:
        entry["fault"] = fault
    first = received + plan.ttft
    answer = encode(plan, chat, rid, conn.info["model"])
    conn.info["counts"].started(plan.prompt)  # /metrics counts the truth; the usage may be scaled
    if plan.stream:
        plain, edge, tail = answer
        conn.stream = Stream(conn, entry, first, plan.itl, plan.chunks, plain, edge, tail, fault)
        conn.write(
            b"HTTP/1.1 200 OK\r\nserver: bench-calibration\r\n"
            b"content-type: text/event-stream; charset=utf-8\r\ntransfer-encoding: chunked\r\n"
            b"x-request-id: " + rid.encode("latin-1") + b"\r\n\r\n"
        )
    else:  # the whole answer at once, when the last chunk would have gone
        whole = response(200, answer, f"x-request-id: {rid}\r\n")
        first += (plan.chunks - 1) * plan.itl
        conn.stream = Stream(conn, entry, first, plan.itl, 1, None, lambda i: whole)
    if not conn.closed:
        conn.sched.add(conn.stream, first)


class _Hung:
    """The stream of a request the server never answers (fault hang): nothing to send or log."""

    def finish(self, error: str = "") -> None:
        pass


HUNG = _Hung()


class Listener:
    """Accepts connections; each socket is non-blocking, without Nagle, with RX timestamps."""

    def __init__(self, sock: socket.socket, sched, info: dict):
        self.sock, self.sched, self.info = sock, sched, info
        # Set on the listener, both options are inherited by every accepted socket (two
        # syscalls fewer per connection when a thousand connect at once), and the kernel
        # stamps from the start, so a request sent right after connect() is stamped as well.
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sched.loop.add_reader(sock.fileno(), self.accept)

    def accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            conn.setblocking(False)
            Conn(conn, self.sched, self.info)

    def close(self) -> None:
        self.sched.loop.remove_reader(self.sock.fileno())
        self.sock.close()


class Conn:
    """One client connection: requests in order, keep-alive unless asked to close.

    Raw sockets (not an asyncio transport) because only recvmsg gives the kernel's arrival time:
    a request's clock starts when it reached the socket, not when a busy server got to it.
    """

    def __init__(self, sock: socket.socket, sched, info: dict):
        self.sock, self.sched, self.info = sock, sched, info
        self.fd, self.loop, self.send = sock.fileno(), sched.loop, sock.send
        self.buf, self.pending = bytearray(), b""
        self.stream: Stream | None = None
        self.arrived = 0.0
        self.close_after = self.closed = self.queued = False
        self.loop.add_reader(self.fd, self.readable)

    def readable(self) -> None:
        try:
            data, anc, _, _ = self.sock.recvmsg(65536, ANC_SPACE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            return self.close("client disconnected")
        self.arrived = arrival(anc, *realtime_offset()) or perf_counter()
        self.buf += data
        self.defer()

    def defer(self) -> None:
        """Let the scheduler parse what came in when no chunk is due (see Scheduler.defer)."""
        if self.stream is None and not self.queued:
            self.queued = True
            self.sched.defer(self)

    def write(self, data: bytes) -> None:
        """Send now; what the kernel will not take yet waits for the socket to drain."""
        if not self.pending:
            try:
                n = self.send(data)
            except BlockingIOError:
                n = 0
            except OSError:
                return self.close("client disconnected")
            if n == len(data):
                return
            data = data[n:]
            self.loop.add_writer(self.fd, self.drain)
        self.pending += data

    def drain(self) -> None:
        try:
            n = self.send(self.pending)
        except BlockingIOError:
            return
        except OSError:
            return self.close("client disconnected")
        self.pending = self.pending[n:]
        if not self.pending:
            self.loop.remove_writer(self.fd)
            if self.close_after and self.stream is None:
                self.close()

    def reset(self, why: str) -> None:
        """Close with a reset (RST), not a clean close: linger on, with a timeout of zero."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close(why)

    def close(self, why: str = "") -> None:
        if self.closed:
            return
        self.closed = True
        if self.stream is not None:
            self.stream.finish(why or "server stopped")
            self.stream = None
        self.loop.remove_reader(self.fd)
        self.loop.remove_writer(self.fd)
        self.sock.close()

    def done(self) -> None:
        """The current response is complete: close, or serve a request already buffered."""
        self.stream = None
        if self.close_after:
            if not self.pending:
                self.close()
        elif self.buf:
            self.defer()

    def reply(self, status: int, obj, ctype: str = "application/json") -> None:
        body = obj if isinstance(obj, bytes) else orjson.dumps(obj)
        self.write(response(status, body, ctype=ctype))
        if self.close_after and not self.pending:
            self.close()

    def fail(self, status: int, message: str) -> None:
        """Answer and close: after a framing error the rest of the byte stream means nothing."""
        self.close_after = True
        self.reply(status, error_body(status, message))

    def parse(self) -> None:
        self.queued = False
        while self.stream is None and not self.closed and not self.close_after:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > MAX_HEAD:
                    self.fail(431, "Request headers too large.")
                return
            lines = self.buf[:end].decode("latin-1").split("\r\n")
            method, target, version = (lines[0].split(" ") + ["", ""])[:3]
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if "chunked" in headers.get("transfer-encoding", ""):
                return self.fail(411, "Send a content-length, not a chunked body.")
            size = headers.get("content-length", "0")
            if not size.isdigit():
                return self.fail(400, "content-length is not a number.")
            if (size := int(size)) > MAX_BODY:
                return self.fail(413, "Request body too large.")
            if len(self.buf) < end + 4 + size:
                return
            body = bytes(self.buf[end + 4 : end + 4 + size])
            del self.buf[: end + 4 + size]
            keep = headers.get("connection", "").lower()
            self.close_after = keep == "close" or (version == "HTTP/1.0" and keep != "keep-alive")
            rid = headers.get("x-request-id") or f"calib-{next(_ids)}"
            self.route(method, target.split("?", 1)[0], body, rid, self.arrived, headers.get(HEADER))

    def route(self, method: str, path: str, raw: bytes, rid: str, received: float, fault: str | None) -> None:
        info = self.info
        if method == "GET" and path in ("/health", "/v1/models", "/version", "/metrics"):
            if path == "/metrics":  # the text is made only now, from integers kept as requests come and go
                return self.reply(200, info["counts"].text(), METRICS_TYPE)
            if path == "/health":
                return self.reply(200, b"")
            if path == "/version":
                return self.reply(200, {"version": f"bench-calibration-{__version__}"})
            model = {
                "id": info["model"],
                "object": "model",
                "created": 0,
                "owned_by": "bench-calibration",
                "root": info["model"],
                "parent": None,
                "max_model_len": info["max_model_len"],
            }
            return self.reply(200, {"object": "list", "data": [model]})
        if path not in ("/v1/completions", "/v1/chat/completions"):
            return self.reply(404, error_body(404, f"No route {method} {path}."))
        if method != "POST":
            return self.reply(405, error_body(405, f"Use POST for {path}."))
        faults = info["faults"]
        try:
            body = orjson.loads(raw)
            if not isinstance(body, dict):
                raise BadRequest(400, "The request body must be a JSON object.")
            fault = faults.pick(fault, body.get("stream") is True)
            if faults.exit_now():  # --exit-after: gone at once, as a crashed engine, its log written
                self.sched.flush()
                os._exit(3)
            if fault in STATUS or fault == "hang":
                self.sched.log({"id": rid, "received": received, "fault": fault})
                if fault == "hang":  # read, never answered: the connection stays busy and silent
                    self.stream = HUNG
                    return
                status = STATUS[fault]
                return self.reply(status, error_body(status, f"Injected fault {fault}."))
            start_request(self, body, path == "/v1/chat/completions", rid, received, fault)
        except orjson.JSONDecodeError:
            self.reply(400, error_body(400, "The request body is not valid JSON."))
        except BadRequest as e:
            self.reply(e.status, error_body(e.status, str(e)))
        except (TypeError, ValueError, AttributeError) as e:  # a field of the wrong shape
            self.reply(400, error_body(400, f"Malformed request: {e}."))
