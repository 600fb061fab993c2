"""What the calibration server says: request checks and OpenAI-shaped answers, as bytes.

Pure functions (no sockets, no clock), so the shapes are easy to read next to vLLM's. Prompt
tokens are counted without a tokenizer: a token-id list counts its ids, text counts its
whitespace-separated words; every generated token is the text " tok".
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from bench.lab import calibration_reasoning as thinking

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
    k: int  # tokens per chunk
    max_tokens: int
    prompt: int
    stream: bool
    options: dict  # stream_options
    scale: float = 1.0  # every usage reports round(scale * true tokens) (--usage-scale)
    reasoning: int = 0  # the first this many tokens are reasoning (bench.lab.calibration_reasoning)
    field: str = "reasoning_content"  # the chat delta's field for them

    @property
    def chunks(self) -> int:
        return -(-self.max_tokens // self.k)

    @property
    def tokens(self) -> list[int]:
        return split_tokens(self.max_tokens, self.k)


def split_tokens(total: int, k: int) -> list[int]:
    """Tokens per chunk: k each, the last the rest."""
    n = -(-total // k)
    return [k] * (n - 1) + [total - k * (n - 1)]


def parse_request(body: dict, chat: bool, info: dict) -> Plan:
    """Check a completion request against the served model and the default timing."""
    if body.get("model") not in (None, info["model"]):
        raise BadRequest(404, f"The model `{body.get('model')}` does not exist.")
    cal = body.get("calibration") or {}
    if not isinstance(cal, dict) or not set(cal) <= set(info["defaults"]):
        raise BadRequest(400, f"calibration must be an object with keys among {sorted(info['defaults'])}, got {cal!r}.")
    cal = {**info["defaults"], **cal}
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise BadRequest(400, "stream_options must be an object.")
    max_tokens = body.get("max_completion_tokens") if chat else None
    if max_tokens is None:
        max_tokens = body.get("max_tokens", 16)  # 16: the OpenAI default
    plan = Plan(
        ttft=_at_least(cal["ttft_ms"], "calibration.ttft_ms", 0) / 1e3,
        itl=_at_least(cal["itl_ms"], "calibration.itl_ms", 0) / 1e3,
        k=_at_least(cal["tokens_per_chunk"], "calibration.tokens_per_chunk", 1, True),
        max_tokens=_at_least(max_tokens, "max_tokens", 1, True),
        prompt=count_prompt(body, chat),
        stream=bool(body.get("stream")),
        options=options,
        scale=info.get("usage_scale", 1.0),
        reasoning=_at_least(cal.get("reasoning_tokens", 0), "calibration.reasoning_tokens", 0, True),
        field=cal.get("reasoning_field", "reasoning_content"),
    )
    if plan.field not in thinking.FIELDS:
        raise BadRequest(400, f"calibration.reasoning_field must be one of {', '.join(thinking.FIELDS)}.")
    if plan.prompt + plan.max_tokens > info["max_model_len"]:
        raise BadRequest(
            400,
            f"This model's maximum context length is {info['max_model_len']} "
            f"tokens, but {plan.prompt + plan.max_tokens} were requested.",
        )
    return plan


# Stand-ins for the request id and creation time in the cached answers of _events.
_RID, _CREATED = "\0rid\0", -271828
_RID_JSON, _CREATED_JSON = orjson.dumps(_RID)[1:-1], b'"created":%d' % _CREATED


def encode(plan: Plan, chat: bool, rid: str, model: str):
    """The answer's bytes, encoded once: (plain, edge, tail) for a stream, else the JSON body.

    plain: every middle chunk (None when chunks differ, as with continuous usage stats);
    edge(i): chunk i (chat's role chunk travels with the first); tail: usage chunk, [DONE] and
    the empty HTTP chunk that ends the body. Answers of one shape differ only in id and
    `created`, so the JSON is made once per shape and those two are swapped in: a thousand
    requests arriving together are parsed in time for their first chunks.
    """
    head = _head(chat, ("chatcmpl-" if chat else "cmpl-") + rid, int(time.time()), model)
    if plan.reasoning:
        return _encode_reasoning(plan, chat, rid, head)
    if not plan.stream:
        return orjson.dumps(
            {
                **head,
                "object": "chat.completion" if chat else "text_completion",
                "choices": [_choice(chat, TOKEN * plan.max_tokens, "length", "message", ASSISTANT)],
                "usage": _usage(plan.prompt, plan.max_tokens, plan.scale),
            }
        )
    continuous = bool(plan.options.get("continuous_usage_stats"))
    first, last, middle, tail = _events(
        chat,
        model,
        plan.prompt,
        plan.max_tokens,
        plan.k,
        continuous,
        bool(plan.options.get("include_usage")),
        plan.scale,
    )
    rid_json, created = orjson.dumps(rid)[1:-1], b'"created":%d' % head["created"]

    def fill(event: bytes, escape: bool = False) -> bytes:
        return event.replace(_RID_JSON, rid_json.replace(b"%", b"%%") if escape else rid_json).replace(
            _CREATED_JSON, created
        )

    first, last = b"".join(sse(fill(e)) for e in first), b"".join(sse(fill(e)) for e in last)
    n, k, prompt = plan.chunks, plan.k, plan.prompt
    plain = None
    if continuous and n > 2:
        template = fill(middle, escape=True)

        def edge(i: int) -> bytes:
            if 0 < i < n - 1:  # the usage numbers formatted in: 0.3 us, 50k times a second
                event = template % (prompt + (i + 1) * k, (i + 1) * k)
                return b"%x\r\n%s\r\n" % (len(event), event)
            return first if i == 0 else last

        if plan.scale != 1.0:  # --usage-scale: a function of its own keeps the one above as fast
            x, told = plan.scale, round(plan.scale * prompt)

            def edge(i: int) -> bytes:
                if 0 < i < n - 1:
                    event = template % (told + round(x * (i + 1) * k), round(x * (i + 1) * k))
                    return b"%x\r\n%s\r\n" % (len(event), event)
                return first if i == 0 else last
    else:
        plain = sse(fill(middle)) if n > 2 else None
        edge: Callable[[int], bytes] = lambda i: first if i == 0 else last  # noqa: E731
    return plain, edge, b"".join(sse(fill(e)) for e in tail) + b"0\r\n\r\n"


def _encode_reasoning(plan: Plan, chat: bool, rid: str, head: dict):
    """encode() for a reasoning answer: every chunk encoded per shape, the id and time swapped in."""
    if not plan.stream:
        body = {**head, "object": "chat.completion" if chat else "text_completion"}
        if chat:
            msg = thinking.message(plan.max_tokens, plan.reasoning, plan.field, TOKEN)
            body["choices"] = [{"index": 0, "message": msg, "logprobs": None, "finish_reason": "length"}]
        else:
            text = thinking.chunk_texts(False, 0, plan.max_tokens, plan.max_tokens, plan.reasoning, "", TOKEN)["text"]
            body["choices"] = [_choice(False, text, "length")]
        usage = _usage(plan.prompt, plan.max_tokens, plan.scale)
        body["usage"] = usage | {"completion_tokens_details": thinking.details(plan.max_tokens, plan.reasoning)}
        return orjson.dumps(body)
    stand_in = _head(chat, ("chatcmpl-" if chat else "cmpl-") + _RID, _CREATED, head["model"])
    chunks, tail = thinking.reasoning_events(
        chat,
        tuple(stand_in.items()),
        plan.prompt,
        plan.max_tokens,
        plan.k,
        bool(plan.options.get("continuous_usage_stats")),
        bool(plan.options.get("include_usage")),
        plan.scale,
        plan.reasoning,
        plan.field,
        TOKEN,
    )
    rid_json, created = orjson.dumps(rid)[1:-1], b'"created":%d' % head["created"]

    def fill(event: bytes) -> bytes:
        return sse(event.replace(_RID_JSON, rid_json).replace(_CREATED_JSON, created))

    frames = [b"".join(fill(e) for e in events) for events in chunks]
    return None, frames.__getitem__, b"".join(fill(e) for e in tail) + sse(END) + b"0\r\n\r\n"


def _head(chat: bool, cid: str, created: int, model: str) -> dict:
    return {
        "id": cid,
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": created,
        "model": model,
    }


def _usage(prompt: int, done: int, scale: float = 1.0) -> dict:
    if scale != 1.0:  # a server whose usage disagrees with what it served (--usage-scale)
        prompt, done = round(scale * prompt), round(scale * done)
    return {"prompt_tokens": prompt, "total_tokens": prompt + done, "completion_tokens": done}


def _choice(chat: bool, text: str, finish: str | None, key: str = "delta", role: dict | None = None) -> dict:
    if chat:
        return {"index": 0, key: {**(role or {}), "content": text}, "logprobs": None, "finish_reason": finish}
    return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish, "stop_reason": None}


@functools.lru_cache(maxsize=1024)
def _events(
    chat: bool, model: str, prompt: int, total: int, k: int, continuous: bool, include_usage: bool, scale: float = 1.0
):
    """One shape's SSE events (unframed, with the stand-in id and time): the first chunk's
    events (chat's role chunk first), the last's (the same when there is one chunk), the
    middle one (with continuous usage, a template taking total and completion tokens) and
    the tail's (usage when asked, then [DONE]). Every usage says round(scale * true tokens)."""
    head = _head(chat, ("chatcmpl-" if chat else "cmpl-") + _RID, _CREATED, model)
    tokens = split_tokens(total, k)
    n = len(tokens)

    def event(obj: dict) -> bytes:
        return b"data: " + orjson.dumps(obj) + b"\n\n"

    def chunk(i: int, role: bool = False) -> bytes:
        finish = "length" if i == n - 1 and not role else None
        text = "" if role else TOKEN * tokens[i]
        obj = {**head, "choices": [_choice(chat, text, finish, role=ASSISTANT if role else {})]}
        if continuous:  # vLLM's continuous_usage_stats: cumulative usage in every chunk
            obj["usage"] = _usage(prompt, 0 if role else min((i + 1) * k, total), scale)
        return event(obj)

    first = ((chunk(0, role=True),) if chat else ()) + (chunk(0),)
    last = first if n == 1 else (chunk(n - 1),)
    middle = b""
    if continuous and n > 2:  # marker numbers, then %d where they stood
        marked = {
            **head,
            "choices": [_choice(chat, TOKEN * k, None)],
            "usage": {"prompt_tokens": round(scale * prompt), "total_tokens": -1, "completion_tokens": -2},
        }
        middle = (
            event(marked)
            .replace(b"%", b"%%")
            .replace(b'"total_tokens":-1', b'"total_tokens":%d')
            .replace(b'"completion_tokens":-2', b'"completion_tokens":%d')
        )
    elif n > 2:
        middle = chunk(1)
    tail = ((event({**head, "choices": [], "usage": _usage(prompt, total, scale)}),) if include_usage else ()) + (END,)
    return first, last, middle, tail
