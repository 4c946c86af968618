from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from kizuna_kit.streaming import stream_in_thread


async def test_rows_arrive_in_order_from_one_thread() -> None:
    threads: set[int] = set()

    def produce() -> Iterator[int]:
        for i in range(2500):
            threads.add(threading.get_ident())
            yield i

    assert [row async for row in stream_in_thread(produce, chunk=100)] == list(range(2500))
    assert len(threads) == 1


async def test_errors_reach_the_consumer() -> None:
    def produce() -> Iterator[int]:
        yield 1
        raise ValueError("cursor broke")

    with pytest.raises(ValueError, match="cursor broke"):
        [row async for row in stream_in_thread(produce)]


async def test_an_abandoned_stream_stops_the_producer() -> None:
    produced = 0

    def produce() -> Iterator[int]:
        nonlocal produced
        for i in range(1_000_000):
            produced += 1
            yield i

    stream = stream_in_thread(produce, chunk=10, depth=2)
    async for row in stream:
        if row == 5:
            break
    await stream.aclose()
    assert produced < 1000


async def test_many_open_streams_do_not_starve_the_worker_pool() -> None:
    def produce() -> Iterator[int]:
        yield from range(20_000)

    streams = [stream_in_thread(produce, chunk=100, depth=2) for _ in range(40)]
    firsts = [await asyncio.wait_for(anext(s), timeout=5) for s in streams]  # none drained
    assert firsts == [0] * 40
    # The shared pool still answers while they wait.
    assert await asyncio.wait_for(asyncio.to_thread(lambda: 42), timeout=5) == 42
    for s in streams:
        await s.aclose()
