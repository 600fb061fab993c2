"""Trace replay: requests sent at the times a production trace recorded, with its exact lengths.

Two formats:
- Mooncake (`--dataset mooncake`, JSONL): one request per line, `timestamp` (ms since the trace's
  first request), `input_length`, `output_length`, and `hash_ids`: one id per 512-token block of
  the prompt, equal ids meaning the same block (and, as ids chain, the same prefix up to it).
- BurstGPT (`--dataset burstgpt`, CSV with a header): `Timestamp` (s), `Request tokens`,
  `Response tokens`; rows with 0 response tokens (requests that failed in the trace) are skipped.

Prompts are built from the model's single-token words (bench.instrument.workload), so a prompt
is exactly its recorded length: the words of a block come from a generator seeded by its hash id,
so requests that share a hash id share that block token for token; a prompt without ids (or past
its last id) continues with words of its own, unique from its first two. The server's own tokens
(a BOS) come off the end of the last block. Request i is due `time_scale` x (its timestamp - the
first measured request's), and its send lag is reported as for any open loop.
"""

from __future__ import annotations

import csv
import json
import os
import random
from dataclasses import dataclass

from bench.errors import UserError
from bench.instrument import workload
from bench.instrument.workload import Prompt

FORMATS = ("mooncake", "burstgpt")
BLOCK = 512  # tokens per Mooncake hash id


@dataclass
class TraceRequest:
    at: float  # seconds since the trace's first request, as recorded
    input_len: int
    output_len: int
    hash_ids: list[int]


def read(fmt: str, path: str) -> list[TraceRequest]:
    if not os.path.isfile(path):
        raise UserError(f"trace file {path} does not exist")
    try:
        with open(path, encoding="utf-8", newline="") as f:
            trace = _mooncake(f, path) if fmt == "mooncake" else _burstgpt(f, path)
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read trace {path}: {e}") from None
    return sorted(trace, key=lambda r: r.at)  # stable: requests recorded at one time keep their order


def _mooncake(f, path: str) -> list[TraceRequest]:
    out = []
    for lineno, line in enumerate(f, 1):
        if not line.strip():
            continue
        try:
            o = json.loads(line)
            req = TraceRequest(
                o["timestamp"] / 1000, int(o["input_length"]), int(o["output_length"]), o.get("hash_ids", [])
            )
            ok = req.input_len > 0 and req.output_len > 0 and all(isinstance(h, int) for h in req.hash_ids)
        except (ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            raise UserError(
                f"{path} line {lineno} is not a Mooncake trace line: a JSON object with timestamp (ms), "
                "input_length and output_length (> 0) and hash_ids (integers)"
            )
        out.append(req)
    return out


def _burstgpt(f, path: str) -> list[TraceRequest]:
    rows = csv.DictReader(f)
    need = {"Timestamp", "Request tokens", "Response tokens"}
    if not need <= set(rows.fieldnames or []):
        raise UserError(f"{path} is not a BurstGPT CSV: its header lacks {', '.join(sorted(need))}")
    out = []
    for lineno, row in enumerate(rows, 2):
        try:
            at, n_in, n_out = float(row["Timestamp"]), int(row["Request tokens"]), int(row["Response tokens"])
        except (TypeError, ValueError):
            raise UserError(
                f"{path} line {lineno}: Timestamp, Request tokens and Response tokens must be numbers"
            ) from None
        if n_in > 0 and n_out > 0:
            out.append(TraceRequest(at, n_in, n_out, []))
    return out


class BlockPrompts:
    """Exact-length prompts made of blocks shared by hash id, then words unique to the request."""

    def __init__(self, tokenizer, seed: int):
        self.words = workload.single_token_words(tokenizer)
        self.unique = workload.RandomPrompts(tokenizer, seed=seed)
        self.seed = seed
        self.blocks: dict[int, list[str]] = {}

    def block(self, hash_id: int) -> list[str]:
        if hash_id not in self.blocks:
            self.blocks[hash_id] = random.Random(f"{self.seed}-{hash_id}").choices(self.words, k=BLOCK)
        return self.blocks[hash_id]

    def text(self, index: int, n_tokens: int, hash_ids: list[int]) -> str:
        words: list[str] = []
        for h in hash_ids:
            if len(words) >= n_tokens:
                break
            words += self.block(h)[: n_tokens - len(words)]
        rest = n_tokens - len(words)
        return "".join(words) + (self.unique.text(index, rest) if rest else "")


def prompts(trace: list[TraceRequest], tokenizer, overhead: int, seed: int, time_scale: float) -> list[Prompt]:
    """The trace's requests as prompts, `at` counted from the first of them and scaled."""
    if not trace:
        return []
    gen, t0 = BlockPrompts(tokenizer, seed), trace[0].at
    out = []
    for i, req in enumerate(trace):
        n = req.input_len - overhead
        if n < 1:
            raise UserError(f"trace request {i} has {req.input_len} input tokens, no more than the server adds itself")
        out.append(Prompt(gen.text(i, n, req.hash_ids), req.input_len, req.output_len, at=(req.at - t0) * time_scale))
    return out


def theoretical_hit_rate(trace: list[TraceRequest], measured_from: int) -> float | None:
    """Share of the measured requests' prompt tokens that an earlier request (warm-up included) already
    sent as the same prefix: block by block while the hash ids repeat, each block counted up to the
    length an earlier request sent of it (a last block may have been cut short). What a prefix cache
    large enough to keep everything serves."""
    sent: dict[int, int] = {}  # hash id -> most tokens of its block sent so far
    reused = total = 0
    for i, req in enumerate(trace):
        prefix = True
        for j, h in enumerate(req.hash_ids):
            n = max(0, min(BLOCK, req.input_len - j * BLOCK))
            if prefix and i >= measured_from:
                reused += min(n, sent.get(h, 0))
            prefix = prefix and sent.get(h, 0) >= n
            sent[h] = max(sent.get(h, 0), n)
        total += req.input_len if i >= measured_from else 0
    return reused / total if total else None
