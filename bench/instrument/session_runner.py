"""Drive conversations through a transport: each user sends its turns one after another.

Users are the workers of bench.instrument.runner.Runner: `--concurrency N` alone keeps N users
busy (closed loop: a user starts the next conversation when one ends), `--rate R` lets users
arrive at R conversations/s (capped at N users if given). Inside a conversation a turn is
scheduled `think` seconds after the previous answer ended, so its send lag is the client's own,
as for any request. A turn that fails ends its conversation (there is no answer to continue
from); `sessions_cut_short` in the summary counts those.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Callable
from time import perf_counter

from bench.instrument.answer import reply
from bench.instrument.runner import Load, Progress, Runner, until
from bench.instrument.sessions import Conversation
from bench.instrument.transport import ConnectTimeout
from bench.instrument.workload import Prompt


class SessionRunner(Runner):
    def __init__(self, *args, rewrite: Callable[[str], str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.rewrite = rewrite  # a deliberate fault applied to the kept history after every turn; None: none
        self.next_id = 0
        self.transport.kept = {}  # the raw replies, for their answer text

    async def converse(self, conv: Conversation, scheduled: float, warmup: bool, load: Load, deadline) -> float:
        """Send every turn of `conv`, the first due at `scheduled`; return when the last ended."""
        history: list[dict] = []
        end = scheduled
        for turn, user in enumerate(conv.users):
            if turn:
                scheduled = end + conv.think[turn]
                if self.stopping or (deadline is not None and scheduled > deadline):
                    break
                await until(scheduled)  # the user's think time: part of the workload
            history.append({"role": "user", "content": user})
            rid, self.next_id = self.next_id, self.next_id + 1
            prompt = Prompt(user, None, conv.output_lens[turn], messages=list(history), session=conv.id, turn=turn)
            end = await self.one(rid, prompt, scheduled, warmup, load.timeout)
            answer = reply(self.transport.kept.pop(self.request_id(rid), None))
            if not answer.ok:
                break
            history.append({"role": "assistant", "content": answer.answer})
            if self.rewrite is not None:
                history = [{**m, "content": self.rewrite(m["content"])} for m in history]
        return end

    async def phase(self, prompts: list[Conversation], load: Load, warmup: bool) -> None:
        conversations = prompts
        arrivals = None if warmup else load.arrivals  # when each conversation's user arrives
        cap = min(load.concurrency or len(conversations), len(conversations))
        order = iter(range(len(conversations)))
        with contextlib.suppress(OSError, ConnectTimeout):  # a refused connection fails, and is recorded, per request
            await self.transport.preconnect(cap if load.concurrency else 0)
        if not warmup and self.on_measure_start is not None:
            self.on_measure_start()
        start = perf_counter()
        deadline = start + load.duration if (load.duration and not warmup) else None

        async def user() -> None:
            free = start
            for k in order:
                due = start + (arrivals[k] if arrivals else 0.0)
                if self.stopping or (deadline is not None and max(due, perf_counter()) > deadline):
                    return
                await until(due)
                free = await self.converse(conversations[k], max(due, free), warmup, load, deadline)

        self.tasks = [asyncio.ensure_future(user()) for _ in range(cap)]
        ticker = asyncio.ensure_future(self._tick()) if self.show_progress else None
        try:
            await asyncio.gather(*self.tasks)
        finally:
            if ticker:
                ticker.cancel()
                print(self.progress.line(), file=sys.stderr)

    async def run(self, warmup_prompts: list[Conversation], prompts: list[Conversation], load: Load) -> None:
        """Warm-up conversations (closed loop), then the measured ones; progress counts turns."""
        if warmup_prompts:
            self.progress = Progress(sum(c.turns for c in warmup_prompts))
            await self.phase(warmup_prompts, Load(load.concurrency, None, None, None, load.timeout), warmup=True)
        self.progress = Progress(sum(c.turns for c in prompts))
        await self.phase(prompts, load, warmup=False)
