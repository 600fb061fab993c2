"""What the calibration server says: request checks and OpenAI-shaped answers, as bytes.

Pure functions (no sockets, no clock), so the shapes are easy to read next to vLLM's. Prompt
tokens are counted without a tokenizer: a token-id list counts its ids, text counts its
whitespace-separated words; every generated token is the text " tok".
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import orjson

TOKEN = " tok"
ASSISTANT = {"role": "assistant"}
END = b"data: [DONE]\n\n"


class BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def error_body(status: int, message: str) -> dict:
    kind = {400: "BadRequestError", 404: "NotFoundError"}.get(status, "Error")
    return {"error": {"message": message, "type": kind, "param": None, "code": status}}


def sse(data: dict | bytes) -> bytes:
    """One SSE event in one HTTP chunk, as vLLM behind uvicorn sends each event."""
    data = data if isinstance(data, bytes) else b"data: " + orjson.dumps(data) + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


def _at_least(value, name: str, minimum: int, integer: bool = False):
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if not ok or isinstance(value, bool) or value < minimum:
        kind = "an integer" if integer else "a number"
        raise BadRequest(400, f"{name} must be {kind} >= {minimum}, got {value!r}.")
    return value


def count_prompt(body: dict, chat: bool) -> int:
    """Prompt tokens: length of a token-id list, else whitespace words (summed over messages)."""
    if chat:
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise BadRequest(400, "messages must be a non-empty list.")
        total = 0
        for m in msgs:
            c = m.get("content") if isinstance(m, dict) else None
            parts = c if isinstance(c, list) else [{"text": c or ""}]
            total += sum(len(str(p.get("text", "")).split()) for p in parts if isinstance(p, dict))
        return total
    prompt = body.get("prompt")
    if isinstance(prompt, list) and all(isinstance(t, int) for t in prompt):
        return len(prompt)
    if isinstance(prompt, str):
        return len(prompt.split())
    raise BadRequest(400, "prompt must be a string or a list of token ids.")


@dataclass
class Plan:
    """One checked request: its timing (seconds), token counts and how it is answered."""
    ttft: float
    itl: float
    k: int              # tokens per chunk
    max_tokens: int
    prompt: int
    stream: bool
    options: dict       # stream_options

    @property
    def chunks(self) -> int:
        return -(-self.max_tokens // self.k)

    @property
    def tokens(self) -> list[int]:
        n = self.chunks
        return [self.k] * (n - 1) + [self.max_tokens - self.k * (n - 1)]


def parse_request(body: dict, chat: bool, info: dict) -> Plan:
    """Check a completion request against the served model and the default timing."""
    if body.get("model") not in (None, info["model"]):
        raise BadRequest(404, f"The model `{body.get('model')}` does not exist.")
    cal = body.get("calibration") or {}
    if not isinstance(cal, dict) or not set(cal) <= set(info["defaults"]):
        raise BadRequest(400, f"calibration must be an object with keys among "
                              f"{sorted(info['defaults'])}, got {cal!r}.")
    cal = {**info["defaults"], **cal}
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise BadRequest(400, "stream_options must be an object.")
    max_tokens = body.get("max_completion_tokens") if chat else None
    if max_tokens is None:
        max_tokens = body.get("max_tokens", 16)  # 16: the OpenAI default
    plan = Plan(ttft=_at_least(cal["ttft_ms"], "calibration.ttft_ms", 0) / 1e3,
                itl=_at_least(cal["itl_ms"], "calibration.itl_ms", 0) / 1e3,
                k=_at_least(cal["tokens_per_chunk"], "calibration.tokens_per_chunk", 1, True),
                max_tokens=_at_least(max_tokens, "max_tokens", 1, True),
                prompt=count_prompt(body, chat), stream=bool(body.get("stream")), options=options)
    if plan.prompt + plan.max_tokens > info["max_model_len"]:
        raise BadRequest(400, f"This model's maximum context length is {info['max_model_len']} "
                              f"tokens, but {plan.prompt + plan.max_tokens} were requested.")
    return plan


def encode(plan: Plan, chat: bool, rid: str, model: str):
    """The answer's bytes, encoded once: (plain, edge, tail) for a stream, else the JSON body.

    plain: every middle chunk (None when chunks differ, as with continuous usage stats);
    edge(i): chunk i (chat's role chunk travels with the first); tail: usage chunk, [DONE] and
    the empty HTTP chunk that ends the body.
    """
    total, prompt, k = plan.max_tokens, plan.prompt, plan.k

    def usage(done: int) -> dict:
        return {"prompt_tokens": prompt, "total_tokens": prompt + done, "completion_tokens": done}

    def choice(text: str, finish: str | None, key: str = "delta", role: dict = {}) -> dict:
        if chat:
            return {"index": 0, key: {**role, "content": text}, "logprobs": None,
                    "finish_reason": finish}
        return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish,
                "stop_reason": None}

    head = {"id": ("chatcmpl-" if chat else "cmpl-") + rid,
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()), "model": model}
    if not plan.stream:
        return orjson.dumps({**head, "object": "chat.completion" if chat else "text_completion",
                             "choices": [choice(TOKEN * total, "length", "message", ASSISTANT)],
                             "usage": usage(total)})
    n, tokens = plan.chunks, plan.tokens
    continuous = bool(plan.options.get("continuous_usage_stats"))

    def chunk(i: int, role: bool = False) -> bytes:
        finish = "length" if i == n - 1 and not role else None
        obj = {**head, "choices": [choice("" if role else TOKEN * tokens[i], finish,
                                          role=ASSISTANT if role else {})]}
        if continuous:  # vLLM's continuous_usage_stats: cumulative usage in every chunk
            obj["usage"] = usage(0 if role else min((i + 1) * k, total))
        return sse(obj)

    role = chunk(0, role=True) if chat else b""
    edge: Callable[[int], bytes] = lambda i: role + chunk(i) if i == 0 else chunk(i)  # noqa: E731
    if continuous and n > 2:
        # Middle chunks differ only in their usage numbers: encode one with marker numbers
        # once and format the numbers in per chunk (0.5 us instead of 2 us, 50k times a second).
        marked = {**head, "choices": [choice(TOKEN * k, None)],
                  "usage": {"prompt_tokens": prompt, "total_tokens": -1, "completion_tokens": -2}}
        data = (b"data: " + orjson.dumps(marked) + b"\n\n").replace(b"%", b"%%")
        template = data.replace(b'"total_tokens":-1', b'"total_tokens":%d').replace(
            b'"completion_tokens":-2', b'"completion_tokens":%d')

        def middle(i: int) -> bytes:
            done = (i + 1) * k
            event = template % (prompt + done, done)
            return b"%x\r\n%s\r\n" % (len(event), event)
        first_or_last = edge
        edge = lambda i: middle(i) if 0 < i < n - 1 else first_or_last(i)  # noqa: E731
    tail = sse({**head, "choices": [], "usage": usage(total)}) \
        if plan.options.get("include_usage") else b""
    plain = None if continuous or n < 3 else chunk(1)
    return plain, edge, tail + sse(END) + b"0\r\n\r\n"
