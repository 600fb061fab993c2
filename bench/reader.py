"""Reading one streamed response as it arrives, at the least cost per read.

The common case (a 200 chunked stream whose reads end on event boundaries and whose events
all carry cumulative usage) is counted without decoding JSON; from the first read that
breaks that shape, or for anything but a stream, bench.stream.StreamParser takes over.
"""
from __future__ import annotations

import re

from bench.stream import StreamParser

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
        if body and not body.endswith(_EVENT_END):
            return False
        found = _COMPLETION_TOKENS.findall(body)
        if len(found) != body.count(b"data: {"):  # an event without usage (an error, say): not our shape
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

    def parser(self, api: str, finished: bool) -> StreamParser:
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

    def result(self) -> StreamParser:
        """The parsed response (complete or not: fill() says which)."""
        return self.general or self.fast.parser(self.api, finished=self.ended)


