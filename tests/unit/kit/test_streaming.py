from __future__ import annotations

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
