"""Prompts to send: exact-length random prompts, ShareGPT conversations, or a JSONL file.

Random prompts are sequences of words that the model's own tokenizer maps to exactly one
token each, so a prompt of N words is N tokens however the words are combined. The server
may add tokens of its own (a BOS token, a chat template); `server_overhead` is measured
once against the server and subtracted, and every request records both counts so any
mismatch shows. Prompt i starts with its own two-word pair, so no two prompts share a
first token and a prefix cache cannot help unless a shared prefix is asked for.
"""

from __future__ import annotations

import functools
import json
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.errors import UserError

# ShareGPT conversations kept (vLLM's filter): at most this many prompt tokens, and in all.
SHAREGPT_MAX_INPUT, SHAREGPT_MAX_TOTAL = 1024, 2048


@dataclass
class Prompt:
    text: str
    input_len: int | None  # tokens the server should count (None when unknown)
    output_len: int | None  # max_tokens to ask for (None: let the model stop)
    messages: list[dict] | None = None  # chat messages to send instead of `text` (a session's history)
    session: int | None = None  # session workloads: conversation and turn, copied into the record
    turn: int | None = None
    at: float | None = None  # trace replay: seconds after the trace's first measured request


def tokenizer_file(path: str) -> Path:
    """The tokenizer.json a path names: the file itself, or the one in a model folder."""
    p = Path(path)
    return p / "tokenizer.json" if p.is_dir() else p


def file_sha256(path: Path) -> str:
    """The file's SHA-256, so a manifest says exactly which tokenizer built the prompts."""
    import hashlib

    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def load_tokenizer(path: str):
    """A `tokenizers.Tokenizer` from a tokenizer.json file or a model folder holding one."""
    from tokenizers import Tokenizer

    file = tokenizer_file(path)
    if not file.is_file():
        raise UserError(f"no tokenizer.json at {path}; pass --tokenizer with a model folder or tokenizer.json")
    try:
        return Tokenizer.from_file(str(file))
    except Exception as e:  # the library raises plain Exception on a malformed file
        raise UserError(f"cannot read tokenizer {file}: {e}") from None


def token_counter(tokenizer) -> Callable[[str], int]:
    """Tokens in a text, without special tokens: how chunks without usage are counted."""

    def count(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False).ids)

    return count


@functools.lru_cache(maxsize=4)  # one vocabulary scan per tokenizer: the probe and the workload share it
def single_token_words(tokenizer) -> tuple[str, ...]:
    """Words (with their leading space) that encode to one token alone and inside a sentence."""
    words = []
    for _token, _id in sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1]):
        text = tokenizer.decode([_id])
        if len(text) < 3 or not text.startswith(" ") or not text[1:].isalpha() or not text[1:].isascii():
            continue
        if len(tokenizer.encode(text, add_special_tokens=False).ids) == 1:
            words.append(text)
    if len(words) < 64:
        raise UserError("the tokenizer has too few whole-word tokens to build exact-length prompts")
    return tuple(words)


class RandomPrompts:
    """Exact-length prompts from single-token words; unique from the first token on."""

    def __init__(self, tokenizer, seed: int = 0, prefix_len: int = 0):
        self.count = token_counter(tokenizer)
        self.words = single_token_words(tokenizer)
        self.rng = random.Random(seed)
        self.prefix = "".join(self.rng.choices(self.words, k=prefix_len))

    def text(self, index: int, n_tokens: int) -> str:
        """`n_tokens` tokens of text: shared prefix, a pair unique to `index`, random words."""
        n_unique = n_tokens - self.prefix.count(" ")
        if n_unique < 0:
            raise UserError(f"--prefix-len is longer than the prompt ({n_tokens} tokens)")
        w = self.words
        head = [w[(index // len(w)) % len(w)], w[index % len(w)]][:n_unique]
        body = self.rng.choices(w, k=max(0, n_unique - len(head)))
        text = self.prefix + "".join(head + body)
        assert self.count(text) == n_tokens, "single-token words combined into a different count"
        return text


def random_workload(
    tokenizer,
    n: int,
    input_len: int,
    output_len: int,
    range_ratio: float,
    seed: int,
    overhead: int,
    prefix_len: int = 0,
) -> list[Prompt]:
    """`n` prompts of input_len (output_len) tokens, each varied by +-range_ratio if asked."""
    if input_len - overhead < 1:
        raise UserError(f"--input-len {input_len} is shorter than the {overhead} tokens the server adds itself")
    gen = RandomPrompts(tokenizer, seed=seed, prefix_len=prefix_len)
    rng = random.Random(seed + 1)

    def vary(x: int) -> int:
        return max(1, round(x * rng.uniform(1 - range_ratio, 1 + range_ratio))) if range_ratio else x

    prompts = []
    for i in range(n):
        ilen, olen = max(overhead + 1, vary(input_len)), vary(output_len)
        prompts.append(Prompt(gen.text(i, ilen - overhead), ilen, olen))
    return prompts


def sharegpt_workload(path: str, tokenizer, n: int, seed: int, output_len: int | None) -> list[Prompt]:
    """First human turn as prompt, first reply's token count as output length (vLLM's filter)."""
    data = _read_json(path)
    pairs = []
    for conv in data if isinstance(data, list) else []:
        turns = conv.get("conversations") or conv.get("conversation") or []
        if len(turns) >= 2 and isinstance(turns[0], dict) and isinstance(turns[1], dict):
            pairs.append((turns[0].get("value", ""), turns[1].get("value", "")))
    if not pairs:
        raise UserError(f"{path} holds no ShareGPT conversations (a list of {{'conversations': [...]}})")
    random.Random(seed).shuffle(pairs)
    prompts = []
    for human, reply in pairs:
        ilen = len(tokenizer.encode(human, add_special_tokens=False).ids)
        olen = output_len or len(tokenizer.encode(reply, add_special_tokens=False).ids)
        if ilen < 4 or olen < 4 or ilen > SHAREGPT_MAX_INPUT or ilen + olen > SHAREGPT_MAX_TOTAL:
            continue  # too short to time, or too long for the usual 2k window
        prompts.append(Prompt(human, None, olen))
        if len(prompts) == n:
            break
    return prompts


def jsonl_workload(path: str, n: int, output_len: int | None) -> list[Prompt]:
    """One JSON object per line: {"prompt": str, "output_len": int (optional)}."""
    prompts = []
    try:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                    prompts.append(Prompt(obj["prompt"], None, obj.get("output_len", output_len)))
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise UserError(f'{path} line {lineno} is not a JSON object with a "prompt"') from None
                if len(prompts) == n:
                    break
    except OSError as e:
        raise UserError(f"cannot read dataset {path}: {e.strerror}") from None
    if not prompts:
        raise UserError(f"{path} holds no prompts")
    return prompts


def _read_json(path: str):
    if not os.path.isfile(path):
        raise UserError(f"dataset file {path} does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"cannot read dataset {path}: {e}") from None
