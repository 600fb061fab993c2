"""Faults the calibration server injects on purpose, so the client's failure handling is measured.

A request gets a fault from its `X-Calibration-Fault` header, or else by chance from the server's
`--faults NAME=SHARE,...` (drawn from a seeded generator, so a run can be repeated); one server
can mix them; drawn faults strike only streamed requests, so a client's set-up probes get
through. `--exit-after N` makes the server exit when the Nth request arrives; `--hang-first N`
leaves the first N requests unanswered, streamed or not (an engine still warming up). The log line
of a faulted request carries `fault`, and every fault is logged, so a test can pair each record
with what the server did. Stream faults strike at the middle chunk.
"""

from __future__ import annotations

import random

# fault -> (what the server does, the error kind a correct client records)
FAULTS = {
    "http_500": ("answers HTTP 500 at once", "http_5xx"),
    "http_503": ("answers HTTP 503 at once", "http_5xx"),
    "http_429": ("answers HTTP 429 at once", "http_429"),
    "reset": ("resets the connection mid-stream", "reset"),
    "stall": ("stops sending mid-stream and keeps the connection open", "timeout_total"),
    "hang": ("reads the request and never answers", "timeout_first_token"),
    "malformed": ("sends an unparseable event mid-stream, then goes on", "malformed"),
    "truncated": ("sends half of an event and closes the connection", "truncated"),
    "early_end": ("ends the stream mid-way, without usage and without [DONE]", "truncated"),
}
STATUS = {"http_500": 500, "http_503": 503, "http_429": 429}
HEADER = "x-calibration-fault"


def parse_shares(text: str) -> dict[str, float]:
    """`reset=0.01,http_500=0.02` -> {"reset": 0.01, "http_500": 0.02}; ValueError says what is wrong."""
    shares = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        if name not in FAULTS:
            raise ValueError(f"unknown fault {name!r}; known: {', '.join(FAULTS)}")
        try:
            shares[name] = float(value)
        except ValueError:
            raise ValueError(f"fault {name} needs a share such as {name}=0.01, not {value!r}") from None
        if not 0 <= shares[name] <= 1:
            raise ValueError(f"fault {name}'s share {value} is not between 0 and 1")
    if sum(shares.values()) > 1:
        raise ValueError("the fault shares add up to more than 1")
    return shares


class Faults:
    """Which fault (if any) a request gets."""

    def __init__(self, shares: dict[str, float], seed: int = 0, exit_after: int | None = None, hang_first: int = 0):
        self.shares, self.rng, self.exit_after, self.seen = shares, random.Random(seed), exit_after, 0
        self.hang_first = hang_first

    def pick(self, header: str | None, streamed: bool) -> str | None:
        """The fault for the next request: its header's, else (for a stream: not the client's
        probes) one drawn by the shares."""
        self.seen += 1
        if self.seen <= self.hang_first:
            return "hang"
        if header:
            return header if header in FAULTS else None
        if self.shares and streamed:
            x, edge = self.rng.random(), 0.0
            for name, share in self.shares.items():
                edge += share
                if x < edge:
                    return name
        return None

    def exit_now(self) -> bool:
        """Whether the server should exit at the request just seen (`--exit-after`)."""
        return self.exit_after is not None and self.seen >= self.exit_after
