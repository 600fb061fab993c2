"""Incremental parser: HTTP/1.1 response -> chunked body -> SSE events -> OpenAI chunks.

Pure and synchronous: fed raw bytes with their arrival time, it keeps what a Record needs
(chunk arrival times, tokens per chunk, usage, status, error). A "content chunk" is an
event that advances the server's completion-token count (with continuous usage stats), or,
when the server sends no per-chunk usage, one that carries non-empty generated text.
"""
from __future__ import annotations

import re

import orjson

from bench.records import Record

_COMPLETION_TOKENS = re.compile(rb'"completion_tokens":\s*(\d+)')
_PROMPT_TOKENS = re.compile(rb'"prompt_tokens":\s*(\d+)')
_EVENT_END = b"\n\n\r\n"  # an SSE event's blank line, then the CRLF that closes its HTTP chunk


def is_streaming_head(data: bytes) -> bool:
    """Whether `data` starts a 200 response with a chunked body (a stream), head complete."""
    end = data.find(b"\r\n\r\n")
    return end > 0 and data.startswith(b"HTTP/1.1 200") and b"chunked" in data[:end].lower()


END = b"\r\n0\r\n\r\n"  # the last data chunk's CRLF and the zero-size chunk that ends the body


class FastStream:
    """The common case, read by read and without decoding JSON: a 200 chunked stream whose
    reads end on event boundaries and whose events all carry cumulative usage
    (continuous_usage_stats, as vLLM and SGLang send it). A content chunk is an event whose
    completion-token count advanced. `read` refuses a read that breaks the pattern, leaving
    the state as it was, so the general parser can take over from that read on."""

    __slots__ = ("seen", "counted", "times", "tokens", "last")

    def __init__(self) -> None:
        self.seen = self.counted = 0
        self.times: list[float] = []
        self.tokens: list[int] = []
        self.last = b""  # the last read that carried usage

    def read(self, data: bytes, t: float) -> bool:
        body = data[:-5] if data.endswith(b"0\r\n\r\n") else data  # drop the zero-size chunk
        if body and (not body.endswith(_EVENT_END) or b'"error"' in body):
            return False
        found = _COMPLETION_TOKENS.findall(body)
        if len(found) != body.count(b"data: {"):  # an event without usage: not our shape
            return False
        if found:
            seen = self.seen
            for m in found:
                done = int(m)
                if done > seen:
                    self.times.append(t)
                    self.tokens.append(done - seen)
                    seen = done
            self.seen = seen
            self.counted += len(found)
            self.last = body
        return True

    def parser(self, api: str, finished: bool) -> "StreamParser":
        """A general parser holding what was counted so far, positioned after the last read."""
        p = StreamParser(api)
        p.status, p.head_done, p.chunked, p.finished = 200, True, True, finished
        p.times, p.tokens, p.texts = self.times, self.tokens, [""] * len(self.times)
        p.seen_tokens = self.seen
        if self.counted:
            p.completion_tokens = self.seen
            found = _PROMPT_TOKENS.findall(self.last)
            p.prompt_tokens = int(found[-1]) if found else None
        return p


class ResponseReader:
    """One response as it arrives: counted by FastStream while the stream keeps the common
    shape, by the general StreamParser from the first read that does not (or from the start,
    for anything but a 200 chunked stream)."""

    __slots__ = ("api", "fast", "general", "fresh", "tail", "ended", "keep_alive")

    def __init__(self, api: str):
        self.api = api
        self.fast = FastStream()
        self.general: StreamParser | None = None
        self.fresh = True
        self.tail = b""
        self.ended = False
        self.keep_alive = True

    def feed(self, data: bytes, t: float) -> bool:
        """Take one read that arrived at `t`; True once the response is complete."""
        if self.general is None:
            if self.fresh:
                self.fresh = False
                if not is_streaming_head(data):
                    self.general = StreamParser(self.api)
                    return self._general(data, t)
                head_end = data.find(b"\r\n\r\n")
                self.keep_alive = b"connection: close" not in data[:head_end].lower()
                data = data[head_end + 4:]
            if self.fast.read(data, t):
                if data.endswith(END) or (len(data) < len(END) and (self.tail + data).endswith(END)):
                    self.ended = True
                self.tail = data  # only its last bytes matter, when the next read is short
                return self.ended
            self.general = self.fast.parser(self.api, finished=False)
        return self._general(data, t)

    def _general(self, data: bytes, t: float) -> bool:
        self.general.feed(data, t)
        return self.general.finished

    def result(self) -> "StreamParser":
        """The parsed response (complete or not: fill() says which)."""
        return self.general or self.fast.parser(self.api, finished=self.ended)


class StreamParser:
    def __init__(self, api: str):
        self.chat = api == "chat"
        self.buf = b""           # unparsed HTTP bytes (head, or chunked framing)
        self.sse = b""           # body bytes not yet cut into SSE events
        self.status = 0
        self.head_done = False
        self.chunked = False
        self.remaining = -1      # bytes left in the current HTTP chunk or Content-Length body
        self.until_close = False
        self.keep_alive = True
        self.finished = False
        self.body_error = b""    # body of a non-200 response
        self.times: list[float] = []
        self.tokens: list[int | None] = []
        self.texts: list[str] = []  # kept only for chunks whose token count is unknown
        self.seen_tokens = 0
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None
        self.error = ""
        self.error_kind = ""

    # -- HTTP framing ---------------------------------------------------------------------
    def feed(self, data: bytes, t: float) -> None:
        if self.finished:
            return  # the final CRLF or trailers after the last chunk
        self.buf += data
        if not self.head_done and not self._head():
            return
        if self.chunked:
            self._chunks(t)
        else:
            body, self.buf = self.buf, b""
            if self.remaining >= 0:
                self.remaining -= len(body)
                self.finished = self.remaining <= 0
            self._body(body, t)
        if self.finished and self.sse.strip():
            self._events(t, final=True)

    def _head(self) -> bool:
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return False
        lines = self.buf[:end].decode("latin-1").split("\r\n")
        self.buf = self.buf[end + 4:]
        self.head_done = True
        parts = lines[0].split(" ", 2)
        self.status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        headers = {k.strip().lower(): v.strip().lower() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        self.chunked = "chunked" in headers.get("transfer-encoding", "")
        self.keep_alive = headers.get("connection", "") != "close" and parts[0] == "HTTP/1.1"
        if not self.chunked:
            if "content-length" in headers:
                self.remaining = int(headers["content-length"])
                self.finished = self.remaining == 0
            else:
                self.until_close, self.keep_alive = True, False
        return True

    def _chunks(self, t: float) -> None:
        buf, pieces = self.buf, []
        while True:
            if self.remaining > 0:
                piece = buf[:self.remaining]
                pieces.append(piece)
                buf = buf[len(piece):]
                self.remaining -= len(piece)
                if self.remaining:
                    break
                self.remaining = -2  # expect the CRLF that closes a chunk
            if self.remaining == -2:
                if len(buf) < 2:
                    break
                buf, self.remaining = buf[2:], -1
            if self.remaining == -3:  # after the zero-size chunk: (trailers and) an empty line
                if buf.startswith(b"\r\n") or b"\r\n\r\n" in buf:
                    self.finished, buf = True, b""
                break
            nl = buf.find(b"\r\n")
            if nl < 0:
                break
            size = int(buf[:nl].split(b";")[0], 16)
            buf = buf[nl + 2:]
            if size == 0:
                self.remaining = -3  # finished only with the last CRLF, or it would be read as the next response
                continue
            self.remaining = size
        self.buf = buf
        self._body(b"".join(pieces), t)

    def _body(self, body: bytes, t: float) -> None:
        if not body:
            return
        if self.status != 200:
            self.body_error += body
            return
        self.sse += body
        self._events(t)

    # -- SSE and OpenAI chunks -----------------------------------------------------------
    def _events(self, t: float, final: bool = False) -> None:
        sse = self.sse.replace(b"\r\n", b"\n") if b"\r" in self.sse else self.sse
        *events, rest = sse.split(b"\n\n")
        if final:
            events, rest = events + [rest], b""
        self.sse = rest
        for event in events:
            for line in event.split(b"\n"):
                if line.startswith(b"data:"):
                    self._chunk(line[5:].strip(), t)

    def _chunk(self, data: bytes, t: float) -> None:
        if not data or data == b"[DONE]":
            return
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            self._fail("bad_stream", f"unparseable stream event: {data[:120]!r}")
            return
        self.event(obj, t)

    def event(self, obj, t: float) -> None:
        """Take one decoded stream chunk (a dict) that arrived at time t."""
        if not isinstance(obj, dict):
            return
        if obj.get("error") or obj.get("object") == "error" or obj.get("object") == "error":
            err = obj.get("error", obj)
            self._fail("stream_error", str(err.get("message", err) if isinstance(err, dict) else err))
            return
        choices = obj.get("choices") or []
        usage = obj.get("usage")
        text = ""
        if choices:
            c = choices[0]
            text = ((c.get("delta") or {}).get("content") or "") if self.chat else (c.get("text") or "")
        if usage:
            self.prompt_tokens = usage.get("prompt_tokens", self.prompt_tokens)
            done = usage.get("completion_tokens")
            if done is not None:
                self.completion_tokens = done
                if choices and done > self.seen_tokens:
                    self.times.append(t)
                    self.tokens.append(done - self.seen_tokens)
                    self.texts.append("")
                    self.seen_tokens = done
                return
        if choices and text:
            self.times.append(t)
            self.tokens.append(None)
            self.texts.append(text)

    def _fail(self, kind: str, message: str) -> None:
        if not self.error:
            self.error_kind, self.error = kind, message.replace("\n", " ")[:500]

    # -- result ------------------------------------------------------------------------
    def fill(self, rec: Record, count=None) -> None:
        """Copy what was parsed into `rec` (times still absolute perf_counter values).

        Chunks without per-chunk usage get their token count from `count(text)` (the
        tokenizer) or 1; when the server sent no usage at all, the total is that sum and the
        record says the tokens were counted.
        """
        rec.status = self.status
        rec.chunk_times = self.times
        rec.chunk_tokens = [k if k is not None else max(1, count(x)) if count else 1
                            for k, x in zip(self.tokens, self.texts)]
        if self.completion_tokens is None and self.times:
            self.completion_tokens = sum(rec.chunk_tokens)
            rec.usage_source = "counted"
        rec.first = self.times[0] if self.times else None
        rec.last = self.times[-1] if self.times else None
        rec.prompt_tokens = self.prompt_tokens
        rec.completion_tokens = self.completion_tokens
        if self.status and self.status != 200:
            kind = "http_4xx" if 400 <= self.status < 500 else "http_5xx" if self.status >= 500 else "http_other"
            self._fail(kind, f"HTTP {self.status}: {_error_text(self.body_error)}")
        elif not self.finished:
            self._fail("incomplete", "the response ended before the stream finished")
        elif not self.times and not self.error:
            self._fail("no_output", "the stream carried no generated text")
        rec.error, rec.error_kind = self.error, self.error_kind


def _error_text(body: bytes) -> str:
    try:
        obj = orjson.loads(body)
        err = obj.get("error", obj) if isinstance(obj, dict) else obj
        msg = err.get("message", err) if isinstance(err, dict) else err
        return str(msg)[:300]
    except orjson.JSONDecodeError:
        return body[:300].decode("utf-8", "replace")
