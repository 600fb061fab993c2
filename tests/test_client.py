"""The raw transport against the calibration server: chunk times are the kernel's."""

from __future__ import annotations

import asyncio
import time

import pytest
import uvloop

from bench.instrument import client
from bench.instrument.client import RawTransport
from bench.instrument.records import Record
from bench.lab.calibration import read_log, start_server, stop_server

STREAM = {
    "model": "calibration",
    "prompt": "a b c",
    "stream": True,
    "stream_options": {"include_usage": True, "continuous_usage_stats": True},
}


def stream_once(base_url: str, body: dict, rid: str, run, stall: tuple[float, float] | None = None) -> Record:
    """One streamed request through RawTransport; `stall` = (after s, for s) blocks the event
    loop meanwhile, as a client busy with other streams would be."""

    async def main() -> Record:
        transport = RawTransport(base_url + "/v1", "completions", {})
        rec = Record(id=0, warmup=False, scheduled=0.0, sent=0.0)

        async def busy() -> None:
            await asyncio.sleep(stall[0])
            time.sleep(stall[1])  # a load on the loop, not a wait for anything

        blocker = asyncio.ensure_future(busy()) if stall else None
        _, fill = await transport.send(body, rid, rec)
        fill()
        if blocker:
            await blocker
        await transport.close()
        return rec

    return run(main())


@pytest.mark.parametrize("run", [uvloop.run, asyncio.run], ids=["uvloop", "asyncio"])
def test_chunk_times_are_the_kernels_even_while_the_loop_is_blocked(tmp_path, run):
    log = tmp_path / "server.jsonl"
    server = start_server(0, log=log, ttft_ms=30, itl_ms=25)
    try:
        # The loop is blocked from 15 ms to 45 ms: the first chunk (due at 30 ms) arrives
        # meanwhile and is read about 15 ms late; the second (55 ms) after the block.
        rec = stream_once(server.base_url, {**STREAM, "max_tokens": 4}, "k1", run, stall=(0.015, 0.030))
    finally:
        stop_server(server)
    truth = read_log(log)["k1"]
    assert rec.ok, rec.error
    assert rec.chunk_tokens == [1, 1, 1, 1]
    errors_ms = [1e3 * (t - s) for t, s in zip(rec.chunk_times, truth["sent"])]
    assert all(0 <= e < 0.5 for e in errors_ms), errors_ms


def three_requests(server, meddle) -> tuple[list[list], list[Record]]:
    """Three requests through one transport; after each, the idle pool as it stands, and
    `meddle(i, pooled connection)` to age or close it before the next."""

    async def main():
        transport = RawTransport(server.base_url + "/v1", "completions", {})
        pools, recs = [], []
        for i in range(3):
            rec = Record(id=i, warmup=False, scheduled=0.0, sent=0.0)
            _, fill = await transport.send({**STREAM, "max_tokens": 3}, f"r{i}", rec)
            fill()
            recs.append(rec)
            pools.append(list(transport._idle))
            meddle(i, pools[-1][0])
        await transport.close()
        return pools, recs

    try:
        return uvloop.run(main())
    finally:
        stop_server(server)


def test_a_connection_is_reused_and_a_closed_one_is_replaced(tmp_path):
    server = start_server(0, log=tmp_path / "server.jsonl", ttft_ms=1, itl_ms=1)

    def drop(i, conn):
        if i == 1:
            conn.close()  # as when the server drops an idle keep-alive connection

    pools, recs = three_requests(server, drop)
    assert [len(p) for p in pools] == [1, 1, 1]
    assert pools[1][0] is pools[0][0], "the second request should reuse the first one's connection"
    assert pools[2][0] is not pools[1][0], "a closed connection must not be handed out again"
    assert [r.completion_tokens for r in recs] == [3, 3, 3] and all(r.ok for r in recs)


def test_a_connection_idle_too_long_is_replaced_not_reused(tmp_path):
    """Servers drop idle keep-alive connections (uvicorn after 5 s); one idle longer than STALE is
    closed and a new one opened, so no request is written into a connection being closed."""
    server = start_server(0, log=tmp_path / "server.jsonl", ttft_ms=1, itl_ms=1)

    def age(i, conn):
        if i == 1:
            conn.idle_since -= client.STALE  # as if it had lain in the pool that long

    pools, recs = three_requests(server, age)
    conns = [p[0] for p in pools]
    assert conns[1] is conns[0], "a connection used a moment ago is reused"
    assert conns[2] is not conns[1] and conns[1].closed, "a stale one is closed and replaced"
    assert all(r.ok for r in recs)
