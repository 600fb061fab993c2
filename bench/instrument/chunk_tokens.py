"""Tokens per streamed chunk when the server does not say them chunk by chunk.

A server with per-chunk usage (vLLM, SGLang with continuous_usage_stats) gives every chunk its count.
One that reports usage only at the end (Transformers' server) gives the request's total, which must
not land on the last chunk as one 256-token chunk: token ITL would hold one huge gap/k share and every
other chunk would count nothing. So the text chunks share the total, and the record says how
(`Record.chunk_tokens_source`):

- "one_each": as many text chunks as tokens in the total: one token each (a server that streams
  every token on its own, as Transformers' does);
- "tokenizer": the tokenizer's count of each chunk's text, which adds up to the total (or there is
  no total to check against: the record's usage_source then says "counted");
- "fitted": one token each, plus the tokens left over given to the chunks with room for them, most
  room first: room is what the tokenizer counts beyond one token, plus one per character of more
  than one byte (a token that ends inside a UTF-8 character streams no text of its own, so the
  next chunk carries both tokens' text, which may re-tokenize as one);
- "unmatched": none of the above adds up to the total; the tokenizer's counts are kept and the
  summary counts the request in `chunk_token_mismatches`.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable


def assign(
    tokens: list[int | None], texts: list[str], total: int | None, count: Callable[[str], int] | None
) -> tuple[list[int], str]:
    """(tokens per chunk, how they were found) for chunks whose count is None where unknown."""
    n = len(tokens)
    if total is not None and total == n and all(k is None or k == 1 for k in tokens):
        return [1] * n, "one_each"
    counted = [k if k is not None else max(1, count(x)) if count else 1 for k, x in zip(tokens, texts)]
    if total is None or sum(counted) == total:
        return counted, "tokenizer"
    fitted = _fit(counted, texts, total) if all(k is None for k in tokens) else None
    return (fitted, "fitted") if fitted is not None else (counted, "unmatched")


def _fit(counted: list[int], texts: list[str], total: int) -> list[int] | None:
    """One token per chunk and the rest where there is room, most room first; None if it does not
    fit (more chunks than tokens, or more tokens left than there is room for)."""
    left = total - len(counted)
    rooms = [c - 1 + sum(1 for ch in x if ord(ch) > 127) for c, x in zip(counted, texts)]
    if left < 0 or left > sum(rooms):
        return None
    ks = [1] * len(counted)
    room = [(-r, i) for i, r in enumerate(rooms) if r > 0]  # a heap of (-room, chunk)
    heapq.heapify(room)
    while left:
        r, i = heapq.heappop(room)
        ks[i] += 1
        left -= 1
        if r + 1 < 0:
            heapq.heappush(room, (r + 1, i))
    return ks
