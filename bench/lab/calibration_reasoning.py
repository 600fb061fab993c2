"""The calibration server as a reasoning model: R reasoning tokens, then the answer.

A request with `reasoning_tokens` R > 0 (the --reasoning-tokens default, or the body's
`calibration.reasoning_tokens`) streams its first R tokens as reasoning (" think" each) and the
rest as answer (" tok"), on the same schedule as any stream. On the chat API the reasoning goes in
`delta.<field>`, the field being `reasoning_content` (SGLang, TensorRT-LLM) or `reasoning` (vLLM),
and a chunk that holds both kinds carries both fields; on the completions API it stays inline,
`<think>` before the first reasoning token and `</think>` after the last (the tags count as no
tokens here). Every usage adds `completion_tokens_details.reasoning_tokens`, as vLLM's does.
The log gets `reasoning_tokens` and `first_answer_chunk`, the index of the first chunk carrying
an answer token (null when the output ends while reasoning): the true TTFO is that chunk's
`sent` minus `received`.
"""

from __future__ import annotations

import functools

import orjson

FIELDS = ("reasoning_content", "reasoning")
THINK = " think"


def first_answer_chunk(total: int, k: int, reasoning: int) -> int | None:
    """Index of the first chunk (k tokens each) that carries an answer token."""
    return reasoning // k if reasoning < total else None


def details(done: int, reasoning: int, scale: float = 1.0) -> dict:
    """The usage's completion_tokens_details after `done` tokens."""
    return {"reasoning_tokens": round(scale * min(done, reasoning))}


def chunk_texts(chat: bool, lo: int, hi: int, total: int, reasoning: int, field: str, token: str) -> dict:
    """The text fields of the chunk holding tokens lo..hi-1: chat's delta, or {"text": ...}."""
    thinking = max(0, min(hi, reasoning) - lo)
    answer = hi - lo - thinking
    if chat:
        out = {field: THINK * thinking} if thinking else {}
        return out | ({"content": token * answer} if answer else {})
    text = ("<think>" if lo == 0 else "") + THINK * thinking
    text += "</think>" if lo < reasoning <= hi and reasoning < total else ""
    return {"text": text + token * answer}


@functools.lru_cache(maxsize=256)
def reasoning_events(
    chat: bool,
    head: tuple,
    prompt: int,
    total: int,
    k: int,
    continuous: bool,
    include_usage: bool,
    scale: float,
    reasoning: int,
    field: str,
    token: str,
):
    """Every chunk's SSE events (chat's role chunk travels with the first) and the tail's usage
    event, unframed, holding the stand-in id and time of the head given."""
    head = dict(head)
    tokens = [min(k, total - i) for i in range(0, total, k)]

    def usage(done: int) -> dict:
        p, d = round(scale * prompt), round(scale * done)
        return {
            "prompt_tokens": p,
            "total_tokens": p + d,
            "completion_tokens": d,
            "completion_tokens_details": details(done, reasoning, scale),
        }

    chunks, lo = [], 0
    for i, n in enumerate(tokens):
        texts = chunk_texts(chat, lo, lo + n, total, reasoning, field, token)
        finish = "length" if i == len(tokens) - 1 else None
        choice = {"index": 0, "delta": texts} if chat else {"index": 0, **texts}
        choice |= {"logprobs": None, "finish_reason": finish}
        event = {**head, "choices": [choice]} | ({"usage": usage(lo + n)} if continuous else {})
        events = [event]
        if chat and i == 0:  # the role chunk first, as vLLM sends it
            role = {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
            events.insert(0, {**head, "choices": [role]} | ({"usage": usage(0)} if continuous else {}))
        chunks.append(tuple(b"data: " + orjson.dumps(e) + b"\n\n" for e in events))
        lo += n
    tail = (
        (b"data: " + orjson.dumps({**head, "choices": [], "usage": usage(total)}) + b"\n\n",) if include_usage else ()
    )
    return tuple(chunks), tail


def message(total: int, reasoning: int, field: str, token: str) -> dict:
    """A non-streamed chat answer's message."""
    answer = total - min(total, reasoning)
    return {"role": "assistant", field: THINK * min(total, reasoning), "content": token * answer if answer else None}
