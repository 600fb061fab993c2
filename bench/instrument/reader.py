"""Reading one streamed response as it arrives, at the least cost per read.

The common case (a 200 chunked stream whose reads end on event boundaries and whose events
all carry cumulative usage) is counted without decoding JSON; from the first read that
breaks that shape, or for anything but a stream, bench.instrument.stream.StreamParser takes over.
Reasoning and answer chunks are told apart from the bytes too (bench.instrument.reasoning);
only an event holding an inline think tag is decoded. A whole short answer in one read, without
reasoning, is counted in one pass; a stream counted here that finished cleanly fills its record
directly, and anything else is filled by the general parser, which judges what went wrong.
"""

from __future__ import annotations

import re

import orjson

from bench.instrument import reasoning as labels
from bench.instrument.reasoning import Split
from bench.instrument.records import Record
from bench.instrument.stream import StreamParser
from bench.instrument.transport import TokenCounter

_completion_tokens = re.compile(rb'"completion_tokens":\s*(\d+)').findall
_PROMPT_TOKENS = re.compile(rb'"prompt_tokens":\s*(\d+)')
_REASONING_TOKENS = re.compile(rb'"reasoning_tokens":\s*(\d+)')
_reasoning_text = re.compile(rb'"reasoning(?:_content)?":"[^"]').search  # a non-empty reasoning delta
_reasoning_spaced = re.compile(rb'"reasoning(?:_content)?"\s*:\s*"[^"]').search  # the same in any JSON spacing
_TAG = labels.TAG
_tag = re.compile(re.escape(_TAG)).search  # a regex finds it in a read faster than `in` (~170 vs ~250 ns)
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
        "raw",
        "split",
        "pending",
        "labelled",
        "tags_only",
    )

    def __init__(self, api: str, think: bool = False):
        self.api = api
        self.split = Split(think)  # the labels of the chunks counted here (reasoning or answer)
        self.pending: tuple[int, bytes] | None = None  # the last reasoning chunk before the answer, and its event
        self.labelled = False  # the answer began: every chunk from here on is answer, nothing to look for
        self.tags_only = False  # the answer began, but an inline end tag may still relabel
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
        self.raw: list[bytes] | None = None  # when a list: every read is kept in it (a session needs the reply's text)

    def feed(self, data: bytes, t: float) -> bool:
        """Take one read that arrived at `t`; True once the response is complete."""
        if self.raw is not None:
            self.raw.append(data)
        # The steady state first: one or more whole events, each with usage, body going on.
        # (_count's loop, written out here: this runs once per read, tens of thousands a second.)
        if data.endswith(_EVENT_END) and self.general is None and not self.fresh:
            found = _completion_tokens(data)
            if found and len(found) == data.count(_EVENT_START):
                # Before the answer each chunk is labelled; with inline tags and none yet, only a
                # read holding a tag is (an end tag would make every chunk so far reasoning).
                if not self.labelled and not (self.tags_only and _tag(data) is None):
                    self._take(data, t, found)
                    self.last, self.tail = data, data
                    if data.endswith(_DONE_END):
                        self.done = True
                    return False
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
        if self.fresh and data.endswith(END) and self._whole(data, t):
            return True
        return self._feed(data, t)

    def _whole(self, data: bytes, t: float) -> bool:
        """A whole response in one read (a short answer, or one a server sent at once): counted
        with one search of each kind when it is a 200 stream of the common shape without reasoning
        text; False, changing nothing, for any other. The event-by-event way took ~9 us for a
        2-token answer (a fifth of this client's cost per request), decoding one event to label
        it; but every chunk of one read has the read's time, so without reasoning the answer
        begins at that time whichever chunk the labels would start it at."""
        head_end = data.find(b"\r\n\r\n")
        if head_end < 0 or not data.startswith(b"HTTP/1.1 200"):
            return False
        head = data[:head_end].lower()
        body = data[head_end + 4 : -5]  # without the zero-size chunk
        if (
            b"chunked" not in head
            or not body.endswith(_EVENT_END)
            or _reasoning_spaced(body) is not None
            or (self.split.think and _tag(body) is not None)
        ):
            return False
        found = _completion_tokens(body)
        if not found or len(found) != body.count(_EVENT_START):
            return False
        seen, tokens = 0, []
        for m in found:
            done = int(m)
            if done > seen:
                tokens.append(done - seen)
                seen = done
        done = body.endswith(_DONE_END) or _DONE in body
        self.fresh, self.keep_alive, self.ended, self.done = False, b"connection: close" not in head, True, done
        self.times, self.tokens, self.seen, self.last, self.tail = [t] * len(tokens), tokens, seen, body, body
        if tokens:
            self.split.first_answer, self.labelled = 0, True
        return True

    def _feed(self, data: bytes, t: float) -> bool:
        """Everything but the steady state: the head, the end, and the general parser."""
        if self.general is None:
            if self.fresh:
                self.fresh = False
                if not is_streaming_head(data):
                    self.general = StreamParser(self.api, self.split.think)
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
        if found:
            self._take(body, t, found)
            self.last = body
        if _DONE in body:
            self.done = True
        return True

    def _take(self, data: bytes, t: float, found: list[bytes]) -> None:
        """Count and label the events of a read, each with usage."""
        times, tokens = self.times, self.tokens
        if len(found) == 1:  # the usual read: one event
            done = int(found[0])
            if done > self.seen:
                self._label(len(times), data)
                times.append(t)
                tokens.append(done - self.seen)
                self.seen = done
                self.labelled, self.tags_only = self.split.over, self.split.first_answer is not None
            return
        seen = self.seen
        for event, m in zip([e for e in data.split(b"\n\n") if _EVENT_START in e], found):
            done = int(m)
            if done > seen:
                self._label(len(times), event)
                times.append(t)
                tokens.append(done - seen)
                seen = done
        self.seen = seen
        self.labelled, self.tags_only = self.split.over, self.split.first_answer is not None

    def _label(self, i: int, event: bytes) -> None:
        """Label content chunk `i` (reasoning or answer) from its event's bytes.

        Per read only a search for a non-empty reasoning string (or, with inline think tags, for
        a tag); the few events that decide more are decoded: the first that looks like answer
        (reasoning spelled otherwise would look so too), the reasoning chunk before it (it may
        carry the answer's first text as well) and any that holds a think tag.
        """
        split = self.split
        if self.labelled:  # the answer began (a read through _count: the first or the last)
            return
        if split.first_answer is not None:  # inline tags, none yet: only an end tag can relabel
            if _TAG in event:
                self._decoded(i, event)
            return
        if split.think and (split.inside or _TAG in event):
            if _TAG in event:
                return self._decoded(i, event)
            split.chunk(i, "r", "")  # inside an inline think section
        elif _reasoning_text(event) is not None:  # split.chunk(i, "r", ""), written out: most chunks of R1
            if split.first_reasoning is None:
                split.first_reasoning = i
            split.reasoning.append(i)
            self.pending = (i, event)
        elif split.first_answer is None:
            self._settle()
            self._decoded(i, event)

    def _settle(self) -> None:
        """The reasoning chunk before the answer carried answer text too: the answer began there."""
        if self.pending is not None:
            j, event = self.pending
            self.pending = None
            if self._texts(event)[1]:
                self.split.mixed(j)

    def _decoded(self, i: int, event: bytes) -> None:
        self.split.chunk(i, *self._texts(event))

    def _texts(self, event: bytes) -> tuple[str, str, bool]:
        """(reasoning text, generated text, whether the latter's field holds a string) of one event."""
        start = event.find(b"{")
        end = event.find(b"\n\n", start)
        try:
            obj = orjson.loads(event[start : end if end > 0 else None])
        except orjson.JSONDecodeError:
            return "", "", False
        c = ((obj.get("choices") if isinstance(obj, dict) else None) or [{}])[0]
        delta = c.get("delta") or {}
        text = delta.get("content") if self.api == "chat" else c.get("text")
        return delta.get("reasoning_content") or delta.get("reasoning") or "", text or "", isinstance(text, str)

    def _parser(self, finished: bool) -> StreamParser:
        """A general parser holding what was counted so far, positioned after the last read."""
        if self.split.first_answer is None:
            self._settle()  # the stream's last chunk may hold the end of the reasoning and the answer
        usage = None
        if self.last:
            found = _PROMPT_TOKENS.findall(self.last)
            usage = (self.seen, int(found[-1]) if found else None)
            found = _REASONING_TOKENS.findall(self.last)
            if found:
                self.split.server_tokens = int(found[-1])
        return StreamParser.resume(self.api, self.times, self.tokens, usage, finished, self.done, self.split)

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

    def fill(self, rec: Record, count: TokenCounter | None = None) -> None:
        """Fill `rec` with the response (times absolute perf_counter values). A stream counted here
        that finished cleanly is copied in directly; anything else (an error, a cut, a general
        parse) through result(), whose fill() judges what went wrong."""
        clean = self.ended and self.done and self.times and not self.reset
        if self.general is not None or self.fresh or self.pending is not None or not clean:
            return self.result().fill(rec, count)
        split, last = self.split, self.last
        found = _REASONING_TOKENS.findall(last)
        if found:
            split.server_tokens = int(found[-1])
        found = _PROMPT_TOKENS.findall(last)
        rec.status, rec.chunk_times, rec.chunk_tokens, rec.chunk_tokens_source = 200, self.times, self.tokens, "usage"
        split.fill(rec, self.times, self.tokens)
        rec.first, rec.last = self.times[0], self.times[-1]
        rec.prompt_tokens, rec.completion_tokens = int(found[-1]) if found else None, self.seen
        rec.error = rec.error_kind = ""

    def result(self) -> StreamParser:
        """The parsed response (complete or not: fill() says which)."""
        if self.general is not None:
            return self.general
        if self.fresh:  # no byte came
            p = StreamParser(self.api, self.split.think)
        else:
            p = self._parser(finished=self.ended)
        p.reset = self.reset
        return p
