"""Incremental parser: HTTP/1.1 response -> chunked body -> SSE events -> OpenAI chunks.

Pure and synchronous: fed raw bytes with their arrival time, it keeps what a Record needs
(chunk arrival times, tokens per chunk, usage, status, error). A "content chunk" is an
event that advances the server's completion-token count (with continuous usage stats), or,
when the server sends no per-chunk usage, one that carries non-empty generated text (answer or
reasoning: bench.instrument.reasoning labels which). A usage that first comes after such text
chunks (a server that reports it only at the end) is the request's total, never the token count
of the chunk it rides on: bench.instrument.chunk_tokens shares that total among the text chunks.
"""

from __future__ import annotations

import orjson

from bench.instrument.chunk_tokens import assign
from bench.instrument.reasoning import Split
from bench.instrument.records import Record, http_error_kind


class StreamParser:
    def __init__(self, api: str, think: bool = False):
        self.chat = api == "chat"
        self.split = Split(think)  # which content chunks are reasoning, which the answer
        self.buf = b""  # unparsed HTTP bytes (head, or chunked framing)
        self.sse = b""  # body bytes not yet cut into SSE events
        self.status = 0
        self.head_done = False
        self.chunked = False
        self.remaining = -1  # bytes left in the current HTTP chunk or Content-Length body
        self.until_close = False
        self.keep_alive = True
        self.finished = False
        self.body_error = b""  # body of a non-200 response
        self.times: list[float] = []
        self.tokens: list[int | None] = []
        self.texts: list[str] = []  # kept only for chunks whose token count is unknown
        self.seen_tokens = 0
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None
        self.error = ""
        self.error_kind = ""
        self.reset = False  # the connection was reset (not closed) under this response
        self.done_seen = False  # the stream's closing `data: [DONE]` line came
        self.finish_seen = False  # a choice's finish_reason came: the server ended the output

    @classmethod
    def resume(
        cls,
        api: str,
        times: list[float],
        tokens: list[int],
        usage: tuple[int, int | None] | None,
        finished: bool,
        done_seen: bool = False,
        split: Split | None = None,
    ) -> StreamParser:
        """A parser positioned inside the body of a 200 chunked stream, holding the content chunks
        counted so far (and their labels, `split`) and `usage`, the (completion, prompt) tokens of
        the last usage seen (None: none yet); the next feed() continues from there."""
        p = cls(api)
        p.split = split or p.split
        p.status, p.head_done, p.chunked, p.finished, p.done_seen = 200, True, True, finished, done_seen
        p.times, p.tokens, p.texts = times, tokens, [""] * len(times)
        if usage is not None:
            p.seen_tokens = p.completion_tokens = usage[0]
            p.prompt_tokens = usage[1]
        return p

    def connection_closed(self, reset: bool = False) -> None:
        """The connection ended (`reset`: by a reset, not a close): a body delimited by the
        connection's end is complete with it; any other body still open was cut short."""
        if self.until_close and not reset:
            self.finished = True
        self.reset = self.reset or reset

    def stream_opened(self) -> None:
        """A 200 stream of events already decoded elsewhere (an SDK's) begins: feed them to event()."""
        self.status = 200

    def stream_ended(self) -> None:
        """The decoded stream ended normally (the SDK ends it at its [DONE] line)."""
        self.finished = self.done_seen = True

    def refused(self, status: int, message: str, kind: str | None = None) -> None:
        """The request failed before or while streaming: an HTTP status (0: no response), why, and
        the error kind when the status alone does not say it."""
        self.status, self.finished = status, True
        self._fail(kind or (http_error_kind(status) if status else "server_gone"), message)

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
        self.buf = self.buf[end + 4 :]
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
                piece = buf[: self.remaining]
                pieces.append(piece)
                buf = buf[len(piece) :]
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
            buf = buf[nl + 2 :]
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
        if data == b"[DONE]":
            self.done_seen = True
            return
        if not data:
            return
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            self._fail("malformed", f"unparseable stream event: {data[:120]!r}")
            return
        self.event(obj, t)

    def event(self, obj, t: float) -> None:
        """Take one decoded stream chunk (a dict) that arrived at time t."""
        if not isinstance(obj, dict):
            return
        if obj.get("error") or obj.get("object") == "error":
            err = obj.get("error", obj)
            code = err.get("code") if isinstance(err, dict) else None
            kind = http_error_kind(code) if isinstance(code, int) and code >= 400 else "http_5xx"
            self._fail(kind, str(err.get("message", err) if isinstance(err, dict) else err))
            return
        choices = obj.get("choices") or []
        usage = obj.get("usage")
        text = reasoning = ""
        field = False  # the answer's field holds a string, if an empty one
        if choices:
            c = choices[0]
            if self.chat:
                delta = c.get("delta") or {}
                text, field = delta.get("content") or "", isinstance(delta.get("content"), str)
                reasoning = delta.get("reasoning_content") or delta.get("reasoning") or ""
            else:
                text, field = c.get("text") or "", isinstance(c.get("text"), str)
            self.finish_seen = self.finish_seen or bool(c.get("finish_reason"))
        if usage:
            self.prompt_tokens = usage.get("prompt_tokens", self.prompt_tokens)
            details = usage.get("completion_tokens_details")
            if isinstance(details, dict) and isinstance(details.get("reasoning_tokens"), int):
                self.split.server_tokens = details["reasoning_tokens"]
            done = usage.get("completion_tokens")
            # After text chunks without usage, a usage is the total at the end, not this chunk's count.
            if done is not None and None in self.tokens:
                self.completion_tokens = done
            elif done is not None:
                self.completion_tokens = done
                if choices and done > self.seen_tokens:
                    self.split.chunk(len(self.times), reasoning, text, field)
                    self.times.append(t)
                    self.tokens.append(done - self.seen_tokens)
                    self.texts.append("")
                    self.seen_tokens = done
                return
        if choices and (text or reasoning):
            self.split.chunk(len(self.times), reasoning, text)
            self.times.append(t)
            self.tokens.append(None)
            self.texts.append(reasoning + text)

    def _fail(self, kind: str, message: str) -> None:
        if not self.error:
            self.error_kind, self.error = kind, message.replace("\n", " ")[:500]

    # -- result ------------------------------------------------------------------------
    def fill(self, rec: Record, count=None) -> None:
        """Copy what was parsed into `rec` (times still absolute perf_counter values).

        Chunks without per-chunk usage get their token counts from bench.instrument.chunk_tokens
        (checked against the server's total when it sent one); when the server sent no usage at
        all, the total is their sum and the record says the tokens were counted.
        """
        rec.status = self.status
        rec.chunk_times = self.times
        if None not in self.tokens:
            rec.chunk_tokens, rec.chunk_tokens_source = self.tokens, "usage"
        else:
            rec.chunk_tokens, rec.chunk_tokens_source = assign(self.tokens, self.texts, self.completion_tokens, count)
        if self.completion_tokens is None and self.times:
            self.completion_tokens = sum(rec.chunk_tokens)
            rec.usage_source = "counted"
        self.split.fill(rec, self.times, rec.chunk_tokens)
        rec.first = self.times[0] if self.times else None
        rec.last = self.times[-1] if self.times else None
        rec.prompt_tokens = self.prompt_tokens
        rec.completion_tokens = self.completion_tokens
        if self.status and self.status != 200:
            self._fail(http_error_kind(self.status), f"HTTP {self.status}: {_error_text(self.body_error)}")
        elif not self.finished and self.reset:
            self._fail("reset", "the connection was reset before the stream finished")
        elif not self.finished:
            what = "the stream finished" if self.status else "a response began"
            self._fail("truncated" if self.status else "server_gone", f"the connection closed before {what}")
        elif not self.times and not self.error:
            self._fail("truncated", "the stream finished without generated text")
        elif not self.done_seen and not self.finish_seen and self.chunked:
            # OpenAI-compatible servers close a stream with it (Transformers' ends at the chunk with
            # its finish_reason instead); a body that ends without either was cut short (its last
            # tokens and usage are missing), however cleanly it ended.
            self._fail("truncated", "the stream ended without its closing [DONE] line")
        rec.error, rec.error_kind = self.error, self.error_kind


def _error_text(body: bytes) -> str:
    try:
        obj = orjson.loads(body)
        err = obj.get("error", obj) if isinstance(obj, dict) else obj
        msg = err.get("message", err) if isinstance(err, dict) else err
        return str(msg)[:300]
    except orjson.JSONDecodeError:
        return body[:300].decode("utf-8", "replace")
