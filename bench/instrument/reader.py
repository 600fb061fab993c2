"""Reading one streamed response as it arrives, at the least cost per read.

The common case (a 200 chunked stream whose reads end on event boundaries and whose events
all carry cumulative usage) is counted without decoding JSON; from the first read that
breaks that shape, or for anything but a stream, bench.instrument.stream.StreamParser takes over.
"""

from __future__ import annotations

import re

from bench.instrument.stream import StreamParser

_completion_tokens = re.compile(rb'"completion_tokens":\s*(\d+)').findall
_PROMPT_TOKENS = re.compile(rb'"prompt_tokens":\s*(\d+)')
_EVENT_END = b"\n\n\r\n"  # an SSE event's blank line, then the CRLF that closes its HTTP chunk
_EVENT_START = b"data: {"
_DONE = b"data: [DONE]"
_DONE_END = _DONE + _EVENT_END
END = b"\r\n0\r\n\r\n"  # the last data chunk's CRLF and the zero-size chunk that ends the body


def is_streaming_head(data: bytes) -> bool:
    """Whether `data` starts a 200 response with a chunked body (a stream), head complete."""
    end = data.find(b"\r\n\r\n")
    return end > 0 and data.startswith(b"HTTP/1.1 200") and b"chunked" in data[:end].lower()


class ResponseReader:
    """One response as it arrives.

    While the stream keeps the common shape (vLLM's and SGLang's continuous_usage_stats:
    every event carries the cumulative completion-token count) each read is counted in
    `feed` itself, without decoding JSON: a content chunk is an event whose count advanced.
    A read that breaks the shape is refused before anything changes, and the general
    StreamParser (`general`) takes over from it, holding what was counted so far; it also
    reads anything that is not a 200 chunked stream from the start.
    """

    __slots__ = (
        "api",
        "general",
        "fresh",
        "tail",
        "ended",
        "keep_alive",
        "seen",
        "times",
        "tokens",
        "last",
        "reset",
        "done",
    )

    def __init__(self, api: str):
        self.api = api
        self.general: StreamParser | None = None
        self.fresh = True
        self.tail = b""
        self.ended = False
        self.keep_alive = True
        self.seen = 0  # the cumulative count so far
        self.times: list[float] = []
        self.tokens: list[int] = []
        self.last = b""  # the last read that carried usage
        self.reset = False  # the connection was reset under this response
        self.done = False  # the closing `data: [DONE]` line came

    def feed(self, data: bytes, t: float) -> bool:
        """Take one read that arrived at `t`; True once the response is complete."""
        # The steady state first: one or more whole events, each with usage, body going on.
        # (_count's loop, written out here: this runs once per read, tens of thousands a second.)
        if data.endswith(_EVENT_END) and self.general is None and not self.fresh:
            found = _completion_tokens(data)
            if found and len(found) == data.count(_EVENT_START):
                seen = self.seen
                for m in found:
                    done = int(m)
                    if done > seen:
                        self.times.append(t)
                        self.tokens.append(done - seen)
                        seen = done
                self.seen, self.last, self.tail = seen, data, data
                if data.endswith(_DONE_END):  # the stream's last event, read before its end of body
                    self.done = True
                return False
        return self._feed(data, t)

    def _feed(self, data: bytes, t: float) -> bool:
        """Everything but the steady state: the head, the end, and the general parser."""
        if self.general is None:
            if self.fresh:
                self.fresh = False
                if not is_streaming_head(data):
                    self.general = StreamParser(self.api)
                    return self._general(data, t)
                head_end = data.find(b"\r\n\r\n")
                self.keep_alive = b"connection: close" not in data[:head_end].lower()
                data = data[head_end + 4 :]
            if self._count(data, t):
                if data.endswith(END) or (len(data) < len(END) and (self.tail + data).endswith(END)):
                    self.ended = True
                self.tail = data  # only its last bytes matter, when the next read is short
                return self.ended
            self.general = self._parser(finished=False)
        return self._general(data, t)

    def _count(self, data: bytes, t: float) -> bool:
        """Count a read of the common shape (the last may end the body); False, changing
        nothing, for one that is not."""
        body = data[:-5] if data.endswith(b"0\r\n\r\n") else data  # drop the zero-size chunk
        if body and not body.endswith(_EVENT_END):
            return False
        found = _completion_tokens(body)
        if len(found) != body.count(_EVENT_START):  # an event without usage (an error, say)
            return False
        if _DONE in body:
            self.done = True
        if found:
            seen = self.seen
            for m in found:
                done = int(m)
                if done > seen:
                    self.times.append(t)
                    self.tokens.append(done - seen)
                    seen = done
            self.seen, self.last = seen, body
        return True

    def _parser(self, finished: bool) -> StreamParser:
        """A general parser holding what was counted so far, positioned after the last read."""
        usage = None
        if self.last:
            found = _PROMPT_TOKENS.findall(self.last)
            usage = (self.seen, int(found[-1]) if found else None)
        return StreamParser.resume(self.api, self.times, self.tokens, usage, finished, self.done)

    def _general(self, data: bytes, t: float) -> bool:
        self.general.feed(data, t)
        return self.general.finished

    def connection_closed(self, reset: bool = False) -> None:
        """The connection ended (`reset`: by a reset): a body delimited by the connection's end is
        complete with it; any other response still open was cut short."""
        self.reset = reset
        if self.general is not None:
            self.general.connection_closed(reset)

    @property
    def has_content(self) -> bool:
        """Whether a chunk of generated text has arrived."""
        return bool(self.times) or (self.general is not None and bool(self.general.times))

    @property
    def keeps_alive(self) -> bool:
        """Whether the server keeps the connection open for another request."""
        return self.general.keep_alive if self.general is not None else self.keep_alive

    def result(self) -> StreamParser:
        """The parsed response (complete or not: fill() says which)."""
        if self.general is not None:
            return self.general
        p = StreamParser(self.api) if self.fresh else self._parser(finished=self.ended)  # fresh: no byte came
        p.reset = self.reset
        return p
