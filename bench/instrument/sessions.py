"""Session workloads: conversations whose every turn sends the whole history so far.

A conversation is its user messages, the output length asked for each turn and the think time
before each turn. What the assistant said is not in the workload: each turn sends the server's
actual previous answers (the answer only, see bench.instrument.answer), so the history a turn
sends is exactly what a chat application would send and every earlier prompt is a prefix of it.
Two sources: ShareGPT's full multi-turn conversations (`--dataset sharegpt-sessions`) and a
seeded synthetic generator (`--dataset sessions`: `--turns` and `--think-time` as distributions,
user messages of exactly `--input-len` tokens and answers of `--output-len`, both varied by
`--range-ratio`).

A distribution is written `N` (always N), `A:B` (uniform between A and B) or `exp:M`
(exponential with mean M).

`--session-fault retokenize` breaks the history on purpose, as clients have done by accident:
after every turn the client re-tokenises the history it keeps and joins the decoded tokens with
spaces, so the text drifts and no earlier prompt is a prefix of the next one. The prefix cache
then has nothing to reuse, and the prefix_cache check says so.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from bench.errors import UserError
from bench.instrument import workload

DATASETS = ("sessions", "sharegpt-sessions")
FAULTS = ("retokenize",)


@dataclass
class Conversation:
    id: int
    users: list[str]  # the user message of each turn
    output_lens: list[int | None]  # max_tokens of each turn (None: let the model stop)
    think: list[float]  # seconds the user waits after an answer before each turn (think[0] is 0)

    @property
    def turns(self) -> int:
        return len(self.users)


@dataclass(frozen=True)
class Dist:
    """A distribution of numbers, parsed from `N`, `A:B` or `exp:M`."""

    kind: str  # "fixed", "uniform" or "exp"
    a: float
    b: float = 0.0

    @classmethod
    def parse(cls, text: str, flag: str) -> Dist:
        try:
            if text.startswith("exp:"):
                d = cls("exp", float(text[4:]))
            elif ":" in text:
                lo, hi = text.split(":")
                d = cls("uniform", float(lo), float(hi))
            else:
                d = cls("fixed", float(text))
        except ValueError:
            d = None
        if d is None or d.a < 0 or d.b < 0 or (d.kind == "uniform" and d.b < d.a):
            raise UserError(f"{flag} {text!r} is not a distribution: give N, A:B (uniform, A <= B) or exp:MEAN")
        return d

    def draw(self, rng: random.Random) -> float:
        if self.kind == "uniform":
            return rng.uniform(self.a, self.b)
        return rng.expovariate(1 / self.a) if self.kind == "exp" and self.a > 0 else self.a

    def most(self) -> float | None:
        """The largest value it draws; None when unbounded (exponential)."""
        return None if self.kind == "exp" else self.b if self.kind == "uniform" else self.a

    def __str__(self) -> str:
        return {"fixed": f"{self.a:g}", "uniform": f"{self.a:g}:{self.b:g}", "exp": f"exp:{self.a:g}"}[self.kind]


def synthetic(
    tokenizer, n: int, turns: Dist, think: Dist, input_len: int, output_len: int, range_ratio: float, seed: int
) -> list[Conversation]:
    """`n` conversations: each user message exactly its drawn length in tokens (single-token words,
    unique from its first two words, so conversations share no prefix but the chat template's)."""
    gen = workload.RandomPrompts(tokenizer, seed=seed)
    rng = random.Random(seed + 2)

    def vary(x: int) -> int:
        return max(1, round(x * rng.uniform(1 - range_ratio, 1 + range_ratio))) if range_ratio else x

    out, message = [], 0
    for i in range(n):
        k = max(1, round(turns.draw(rng)))
        users = []
        for _ in range(k):
            users.append(gen.text(message, vary(input_len)))
            message += 1
        out.append(
            Conversation(i, users, [vary(output_len) for _ in range(k)], [0.0] + [think.draw(rng) for _ in users[1:]])
        )
    return out


def sharegpt(
    path: str, tokenizer, n: int, seed: int, output_len: int | None, think: Dist, max_tokens: int
) -> list[Conversation]:
    """ShareGPT conversations with at least two human turns, cut to the turns whose recorded
    history fits in `max_tokens`; each turn's output length is its recorded reply's token count."""
    data = workload._read_json(path)
    rng = random.Random(seed + 2)
    convs = (
        [c.get("conversations") or c.get("conversation") or [] for c in data if isinstance(c, dict)]
        if isinstance(data, list)
        else []
    )
    random.Random(seed).shuffle(convs)

    def tokens(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False).ids)

    out = []
    for turns in convs:
        users, lens, used = [], [], 0
        for human, gpt in zip(turns[::2], turns[1::2]):
            if not (isinstance(human, dict) and isinstance(gpt, dict)) or human.get("from") not in ("human", "user"):
                break
            ask, said = human.get("value") or "", gpt.get("value") or ""
            olen = output_len or tokens(said)
            used += tokens(ask) + olen
            if used > max_tokens or olen < 1 or not ask.strip():
                break
            users.append(ask)
            lens.append(olen)
        if len(users) >= 2:
            out.append(Conversation(len(out), users, lens, [0.0] + [think.draw(rng) for _ in users[1:]]))
            if len(out) == n:
                break
    if not out:
        raise UserError(f"{path} holds no ShareGPT conversation with two human turns that fits {max_tokens} tokens")
    return out


def retokenized(text: str, tokenizer) -> str:
    """The fault: the text re-tokenised and its tokens decoded one by one, joined with spaces."""
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    return " ".join(tokenizer.decode([i]) for i in ids)


def theoretical_reuse(prompt_tokens: list[int | None]) -> list[int]:
    """Tokens of each turn's prompt that repeat a prompt the session already sent: all of the
    previous turn's prompt (it is a prefix of this one), none for the first turn or after a turn
    whose length is unknown."""
    return [0] + [prev or 0 for prev in prompt_tokens[:-1]]
