"""Drive prompts through a transport on a schedule, appending one record per request.

Phases: warm-up (records marked warmup, left out of the statistics), then measure. Both use
the same machinery: `cap` workers share one ordered list of requests; a worker waits for
its request's arrival time (open loop) and sends it the moment it is both due and free, so
`scheduled` = max(arrival, when the worker's slot freed) and sent - scheduled is the
client's own lag. Closed loop is the same with every arrival at the start of the phase.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import uuid
from dataclasses import dataclass, field
from time import perf_counter, process_time

from bench.instrument.records import Record, RecordWriter
from bench.instrument.transport import ConnectTimeout, FirstTokenTimeout
from bench.instrument.workload import Prompt

SPIN = 1e-3  # s before a due time from which the runner yields instead of sleeping on a timer
# Request bytes are encoded before timing starts (orjson, headers: ~3 us a request saved from the
# moment many streams end together) unless the prompts are larger than this all together.
PREPARE_BYTES = 256 << 20
# A request's record is parsed and written DEFER after it ended, WRITE_SLICE records a loop turn
# (~15 us each for 128 chunks), reading in between. When a thousand streams end together, the
# client is busiest then (reading their ends, sending their next requests); writing their
# records in that moment held the loop up to 50 ms (the next round's first and second chunks met
# in one read, sharing the later stamp: first-chunk errors of 20 and 40 ms at C=1,024 and 8,192)
# and made the later ends wait (send lag p99 ~40 ms at C=1,024); a moment later it has time.
DEFER = 0.25
WRITE_SLICE = 32


@dataclass
class Load:
    concurrency: int | None  # most requests in flight; None = unbounded (open loop only)
    rate: float | None  # requests/s for open loop; None = closed loop
    arrivals: list[float] | None  # offsets (s) of each measured request, from schedule.arrival_times
    duration: float | None  # stop sending new requests after this many seconds
    timeout: float | None  # give up on one request after this many seconds
    connections: int | None = None  # to open before timing; None: the concurrency cap, none without one


@dataclass
class Progress:
    total: int
    done: int = 0
    failed: int = 0
    in_flight: int = 0
    started: float = field(default_factory=perf_counter)

    def line(self) -> str:
        width = 30
        filled = int(width * self.done / max(1, self.total))
        return (
            f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} done, "
            f"{self.failed} failed, {self.in_flight} in flight, {perf_counter() - self.started:.1f} s"
        )


async def until(due: float) -> None:
    """Wait until perf_counter() reaches `due`. Timers are ~1 ms coarse and may fire that much early
    (a request sent before its time) or late; so sleep to within SPIN of it, then yield to the loop
    (which keeps reading) until it comes."""
    while (delay := due - perf_counter()) > SPIN:
        await asyncio.sleep(delay - SPIN)
    while perf_counter() < due:
        await asyncio.sleep(0)


class Runner:
    def __init__(
        self, transport, writer: RecordWriter, make_body, t0: float, show_progress: bool, on_measure_start=None
    ):
        self.transport = transport
        self.writer = writer
        self.make_body = make_body  # Prompt -> request body dict
        self.t0 = t0
        self.run_id = uuid.uuid4().hex[:8]
        self.show_progress = show_progress
        self.progress = Progress(0)
        self.stopping = 0  # the signal that stopped the run, 0 while it goes on
        self.id_base = 0  # ids continue from the warm-up phase into the measured one
        self.tasks: list[asyncio.Task] = []
        self.ended: list = []  # (record, fill, when it ended) of requests whose records are not written yet
        # Called once, right before the first measured request; it may return the moment the
        # measured phase starts (a worker of several waits there for the shared start).
        self.on_measure_start = on_measure_start
        self.worker = 0  # the client process this runner is (bench.instrument.workers)
        self.timed_by_transport = False  # the transport enforces the request timeout (no asyncio.timeout)
        self.ids: dict[bool, list[int]] = {}  # per phase (warmup?): ids when not consecutive (a worker's share)
        self.watch = None  # a steady.Watch: stop sending once the measured records are steady
        self.in_flight: dict[int, Record] = {}  # measured requests sent and not ended, for the watch
        self.encode_cpu = 0.0  # CPU (s) spent encoding request bodies before each phase's timing began

    # -- one request ---------------------------------------------------------------------
    async def one(
        self, rid: int, prompt: Prompt, scheduled: float, warmup: bool, timeout: float | None, body=None
    ) -> float:
        """Send one request and wait for its end (its time); `body`: its bytes from the transport's
        prepare(), None to build it here."""
        rec = Record(
            id=rid,
            warmup=warmup,
            scheduled=scheduled,
            sent=0.0,
            input_len=prompt.input_len,
            output_len=prompt.output_len,
            session=prompt.session,
            turn=prompt.turn,
            worker=self.worker,
        )
        self.progress.in_flight += 1
        if not warmup and self.watch is not None:
            self.in_flight[rid] = rec
        fill = None
        transport = self.transport
        if body is None:
            body = self.make_body(prompt)
        try:
            if self.timed_by_transport:  # it enforces the request timeout itself
                end, fill = await transport.send(body, self.request_id(rid), rec)
            else:
                async with asyncio.timeout(timeout):  # no extra task, unlike wait_for on 3.11
                    end, fill = await transport.send(body, self.request_id(rid), rec)
        except TimeoutError:
            end = self._failed(rec, "timeout_total", f"no complete response within {timeout:g} s")
        except ConnectTimeout as e:
            end = self._failed(rec, "timeout_connect", str(e))
        except FirstTokenTimeout as e:
            end = self._failed(rec, "timeout_first_token", str(e))
        except asyncio.CancelledError:
            self._failed(rec, "interrupted", "the run was interrupted before this request finished")
            self.ended.append((rec, None, 0.0))
            self.write_ended()
            raise
        except (ConnectionResetError, BrokenPipeError) as e:
            end = self._failed(rec, "reset", f"{type(e).__name__}: {e}")
        except OSError as e:  # refused, unreachable, unknown host: no server takes the connection
            end = self._failed(rec, "server_gone", f"{type(e).__name__}: {e}")
        # Parsed and written DEFER later, so that this worker's next request, and those of the
        # streams ending with it, go out first; records due together are written in one write.
        self.ended.append((rec, fill, perf_counter()))
        if len(self.ended) == 1:
            asyncio.get_running_loop().call_later(self._defer(), self._write_due)
        return end

    def _defer(self) -> float:
        """How long after its end a record is written: DEFER, or at once (after the sends) while a
        steadiness watch judges the run, which counts a request in flight until its record is
        written and so would judge a window DEFER shorter."""
        return 0.0 if self.watch is not None else DEFER

    def request_id(self, rid: int) -> str:
        """The X-Request-Id of request `rid` (servers log it; the calibration server keys its log by it)."""
        return f"bench-{self.run_id}-{rid}"

    def _failed(self, rec: Record, kind: str, message: str) -> float:
        now = perf_counter()
        rec.sent = rec.sent or now
        rec.error_kind, rec.error = kind, message
        return now

    def _write_due(self) -> None:
        """Write the records ended _defer() ago or more, WRITE_SLICE a loop turn, none while the
        transport still has ended responses to hand over; then come back when the next is due."""
        loop = asyncio.get_running_loop()
        pending = getattr(self.transport, "pending", None)
        if pending is not None and pending():
            loop.call_soon(self._write_due)
            return
        due, ended = perf_counter() - self._defer(), self.ended
        n, most = 0, min(len(ended), WRITE_SLICE)
        while n < most and ended[n][2] <= due:
            n += 1
        if n:
            self.write_ended(n)
        if self.ended:
            wait = self.ended[0][2] - due
            loop.call_soon(self._write_due) if wait <= 0 else loop.call_later(wait, self._write_due)

    def write_ended(self, most: int | None = None) -> None:
        """Write the records of the requests that ended, the first `most` of them (None: all; so is
        the last call, at the end)."""
        if most is None or len(self.ended) <= most:
            ended, self.ended = self.ended, []
        else:
            ended, self.ended = self.ended[:most], self.ended[most:]
        if ended:
            for rec, fill, _ in ended:
                self._finish(rec, fill)
            self.writer.write_many([rec for rec, _, _ in ended])
            if self.watch is not None:
                self._watch(ended)

    def _watch(self, ended) -> None:
        for rec, _, _ in ended:
            if self.in_flight.pop(rec.id, None) is not None:
                self.watch.seen(rec)
        oldest = min((r.sent for r in self.in_flight.values() if r.sent), default=None)
        self.watch.check(oldest)

    def _finish(self, rec: Record, fill=None) -> None:
        if fill is not None:
            fill()
        # Offsets from t0, unrounded: round() would cost ~40 us per 128 chunks, in the very
        # moment many streams end together.
        t0 = self.t0
        rec.scheduled -= t0
        rec.sent -= t0
        if rec.first is not None:
            rec.first -= t0
        if rec.last is not None:
            rec.last -= t0
        if rec.first_reasoning is not None:
            rec.first_reasoning -= t0
        if rec.first_answer is not None:
            rec.first_answer -= t0
        rec.chunk_times = [t - t0 for t in rec.chunk_times]
        p = self.progress
        p.in_flight -= 1
        p.done += 1
        p.failed += bool(rec.error)

    # -- one phase -----------------------------------------------------------------------
    async def phase(self, prompts: list[Prompt], load: Load, warmup: bool) -> None:
        arrivals = None if warmup else load.arrivals
        cap = load.concurrency or len(prompts)
        order = iter(range(len(prompts)))
        ids = self.ids.get(warmup) or range(self.id_base, self.id_base + len(prompts))
        self.timed_by_transport = getattr(self.transport, "times_whole_request", None) == load.timeout
        prepare = getattr(self.transport, "prepare", None)
        bodies = [None] * len(prompts)
        if prepare is not None and sum(len(p.text) for p in prompts) < PREPARE_BYTES:
            cpu = process_time()
            bodies = [prepare(self.make_body(p), self.request_id(i)) for p, i in zip(prompts, ids)]
            self.encode_cpu += process_time() - cpu
        # Closed loops and capped open loops know how many connections they need.
        with contextlib.suppress(OSError, ConnectTimeout):  # a refused connection fails, and is recorded, per request
            n = min(cap, len(prompts)) if load.concurrency else 0
            await self.transport.preconnect(load.connections if load.connections is not None and not warmup else n)
        begins = None
        if not warmup and self.on_measure_start is not None:
            begins = self.on_measure_start()  # e.g. the scraper's "before" scrape: taken before anything is sent
        start = perf_counter() if begins is None else begins
        deadline = start + load.duration if (load.duration and not warmup) else None

        async def worker() -> None:
            free = start
            for k in order:
                due = start + (arrivals[k] if arrivals else 0.0)
                if (
                    self.stopping
                    or self._enough(warmup)
                    or (deadline is not None and max(due, perf_counter()) > deadline)
                ):
                    return
                if due > perf_counter():  # a closed loop's are past: no coroutine to start
                    await until(due)  # uvloop's timers keep whole milliseconds and may fire up to one early
                if self._enough(warmup):  # judged steady while this worker waited for its arrival
                    return
                free = await self.one(ids[k], prompts[k], max(due, free), warmup, load.timeout, bodies[k])

        self.tasks = [asyncio.ensure_future(worker()) for _ in range(min(cap, len(prompts)))]
        ticker = asyncio.ensure_future(self._tick()) if self.show_progress else None
        try:
            await asyncio.gather(*self.tasks)
        finally:
            self.id_base += len(prompts)
            if ticker:
                ticker.cancel()
                print(self.progress.line(), file=sys.stderr)

    def _enough(self, warmup: bool) -> bool:
        return not warmup and self.watch is not None and self.watch.done

    async def run(self, warmup_prompts: list[Prompt], prompts: list[Prompt], load: Load) -> None:
        """Warm up, then measure."""
        if warmup_prompts:
            self.progress = Progress(len(warmup_prompts))
            await self.phase(
                warmup_prompts,
                Load(load.concurrency or len(warmup_prompts), None, None, None, load.timeout),
                warmup=True,
            )
        self.progress = Progress(len(prompts))
        await self.phase(prompts, load, warmup=False)

    def interrupt(self, signum: int = signal.SIGINT) -> None:
        """Stop sending; cancel what is in flight (each still leaves its record)."""
        self.stopping = signum
        for task in self.tasks:
            task.cancel()

    async def _tick(self) -> None:
        while True:
            print(self.progress.line(), end="", file=sys.stderr, flush=True)
            await asyncio.sleep(0.5)
