"""The answer a chat stream gave, from its raw bytes: what a session sends back as history.

Only `content` deltas count. Reasoning deltas (`reasoning_content`, `reasoning`) are dropped,
and so is a `<think>...</think>` block a server without a reasoning parser leaves inline: the
chat templates of reasoning models expect earlier answers without their thinking, and a client
that echoes it changes the prompt the next turn sends (and loses the prefix cache's help).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bench.instrument.stream import StreamParser

_THINK = re.compile(r"^\s*<think>.*?</think>\s*", re.DOTALL)


@dataclass
class Reply:
    ok: bool  # a complete 200 stream (with its closing [DONE]) and no error event
    answer: str  # the answer text, reasoning left out


class _AnswerParser(StreamParser):
    """The stream parser, also keeping the text of every content delta."""

    def __init__(self, api: str):
        super().__init__(api)
        self.pieces: list[str] = []

    def event(self, obj, t: float) -> None:
        if isinstance(obj, dict):
            for c in obj.get("choices") or []:
                piece = (c.get("delta") or {}).get("content") if self.chat else c.get("text")
                if piece:
                    self.pieces.append(piece)
        super().event(obj, t)


def reply(raw: list[bytes] | None, api: str = "chat") -> Reply:
    """The reply in `raw`, the bytes of one HTTP response as they were read."""
    if not raw:
        return Reply(False, "")
    p = _AnswerParser(api)
    p.feed(b"".join(raw), 0.0)
    ok = p.status == 200 and p.finished and p.done_seen and not p.error
    return Reply(ok, _THINK.sub("", "".join(p.pieces), count=1))
