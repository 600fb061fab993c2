"""The calibration server's HTTP side: a minimal HTTP/1.1 parser and the paced stream writer.

A raw asyncio.Protocol instead of a web framework keeps the per-chunk cost to one list append
and one transport.write of bytes encoded when the request arrived. Responses mirror vLLM behind
uvicorn: keep-alive, streams in Transfer-Encoding: chunked, one SSE event per HTTP chunk.
"""
from __future__ import annotations

import asyncio
import itertools
import time

import orjson

from bench import __version__
from bench.calibration_openai import BadRequest, encode, error_body, parse_request

MAX_HEAD, MAX_BODY = 65536, 64 << 20
_ids = itertools.count(1)
perf_counter = time.perf_counter


def response(status: int, body: bytes, extra: str = "") -> bytes:
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
              411: "Length Required", 413: "Payload Too Large", 431: "Header Too Large"}[status]
    return (f"HTTP/1.1 {status} {reason}\r\nserver: bench-calibration\r\n"
            f"content-type: application/json\r\n"
            f"content-length: {len(body)}\r\n{extra}\r\n").encode("latin-1") + body


class Stream:
    """One response on its schedule (chunk i due at first + i * itl), logging as it goes.

    Middle chunks are one pre-encoded bytes object (`plain`); `edge(i)` encodes the others: the
    first (chat's role chunk travels with it), the last (finish_reason) and, with continuous
    usage stats, every chunk. `tail` (usage, [DONE], end of body) follows the last chunk once
    the log line is written, so a client that saw the end can read its entry.
    """
    __slots__ = ("conn", "sched", "entry", "i", "last", "first", "itl", "plain", "edge", "tail",
                 "due_append", "sent_append", "write", "dead")

    def __init__(self, conn: Conn, entry: dict, first: float, itl: float, chunks: int,
                 plain: bytes | None, edge, tail: bytes = b""):
        self.conn, self.sched, self.entry = conn, conn.sched, entry
        self.i, self.last, self.first, self.itl = 0, chunks - 1, first, itl
        self.plain, self.edge, self.tail, self.dead = plain, edge, tail, False
        self.due_append, self.sent_append = entry["due"].append, entry["sent"].append
        self.write = conn.transport.write

    def send(self, due: float) -> float | None:
        """Write the next chunk (due at `due`); return when the one after is due, None when done."""
        if self.dead:
            return None
        i = self.i
        frame = self.plain if 0 < i < self.last and self.plain else self.edge(i)
        self.due_append(due)
        self.sent_append(perf_counter())
        self.write(frame)
        if i == self.last:
            self.dead = True
            self.sched.finished(self, self.entry)
            if self.tail:
                self.write(self.tail)
            self.sched.loop.call_soon(self.conn.done)  # not now: the scheduler owns the heap
            return None
        self.i = i + 1
        return self.first + self.i * self.itl

    def abort(self, why: str) -> None:
        if not self.dead:
            self.dead = True
            self.entry["error"] = why
            self.sched.finished(self, self.entry)


def start_request(conn: Conn, body: dict, chat: bool, rid: str, received: float) -> None:
    """Plan the chunks, encode their bytes once and hand the stream to the scheduler."""
    plan = parse_request(body, chat, conn.info)
    tokens = plan.tokens if plan.stream else [plan.max_tokens]
    entry = {"id": rid, "received": received, "due": [], "sent": [], "tokens": tokens,
             "prompt_tokens": plan.prompt, "completion_tokens": plan.max_tokens,
             "stream": plan.stream, "api": "chat" if chat else "completions",
             "ttft_ms": plan.ttft * 1e3, "itl_ms": plan.itl * 1e3, "tokens_per_chunk": plan.k}
    first = received + plan.ttft
    answer = encode(plan, chat, rid, conn.info["model"])
    if plan.stream:
        plain, edge, tail = answer
        conn.transport.write(
            b"HTTP/1.1 200 OK\r\nserver: bench-calibration\r\n"
            b"content-type: text/event-stream; charset=utf-8\r\ntransfer-encoding: chunked\r\n"
            b"x-request-id: " + rid.encode("latin-1") + b"\r\n\r\n")
        conn.stream = Stream(conn, entry, first, plan.itl, plan.chunks, plain, edge, tail)
    else:  # the whole answer at once, when the last chunk would have gone
        whole = response(200, answer, f"x-request-id: {rid}\r\n")
        first += (plan.chunks - 1) * plan.itl
        conn.stream = Stream(conn, entry, first, plan.itl, 1, None, lambda i: whole)
    conn.sched.add(conn.stream, first)


class Conn(asyncio.Protocol):
    """One client connection: parse requests one at a time; keep-alive unless asked to close."""

    def __init__(self, sched, info: dict):
        self.sched, self.info = sched, info
        self.buf = bytearray()
        self.stream: Stream | None = None
        self.close_after = False

    def connection_made(self, transport) -> None:
        self.transport = transport  # asyncio and uvloop both set TCP_NODELAY: no Nagle delays

    def connection_lost(self, exc) -> None:
        if self.stream is not None:
            self.stream.abort("client disconnected")
            self.stream = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.stream is None:
            self.parse()

    def done(self) -> None:
        """The current response is complete: close, or serve a request already buffered."""
        self.stream = None
        if self.close_after:
            self.transport.close()
        elif self.buf:
            self.parse()

    def reply(self, status: int, obj) -> None:
        body = obj if isinstance(obj, bytes) else orjson.dumps(obj)
        self.transport.write(response(status, body))
        if self.close_after:
            self.transport.close()

    def fail(self, status: int, message: str) -> None:
        """Answer and close: after a framing error the rest of the byte stream means nothing."""
        self.close_after = True
        self.reply(status, error_body(status, message))

    def parse(self) -> None:
        while self.stream is None and not self.transport.is_closing():
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
            received = perf_counter()
            body = bytes(self.buf[end + 4:end + 4 + size])
            del self.buf[:end + 4 + size]
            keep = headers.get("connection", "").lower()
            self.close_after = keep == "close" or (version == "HTTP/1.0" and keep != "keep-alive")
            rid = headers.get("x-request-id") or f"calib-{next(_ids)}"
            self.route(method, target.split("?", 1)[0], body, rid, received)

    def route(self, method: str, path: str, raw: bytes, rid: str, received: float) -> None:
        info = self.info
        if method == "GET" and path in ("/health", "/v1/models", "/version"):
            if path == "/health":
                return self.reply(200, b"")
            if path == "/version":
                return self.reply(200, {"version": f"bench-calibration-{__version__}"})
            model = {"id": info["model"], "object": "model", "created": 0,
                     "owned_by": "bench-calibration", "root": info["model"], "parent": None,
                     "max_model_len": info["max_model_len"]}
            return self.reply(200, {"object": "list", "data": [model]})
        if path not in ("/v1/completions", "/v1/chat/completions"):
            return self.reply(404, error_body(404, f"No route {method} {path}."))
        if method != "POST":
            return self.reply(405, error_body(405, f"Use POST for {path}."))
        try:
            body = orjson.loads(raw)
            if not isinstance(body, dict):
                raise BadRequest(400, "The request body must be a JSON object.")
            start_request(self, body, path == "/v1/chat/completions", rid, received)
        except orjson.JSONDecodeError:
            self.reply(400, error_body(400, "The request body is not valid JSON."))
        except BadRequest as e:
            self.reply(e.status, error_body(e.status, str(e)))
        except (TypeError, ValueError, AttributeError) as e:  # a field of the wrong shape
            self.reply(400, error_body(400, f"Malformed request: {e}."))
