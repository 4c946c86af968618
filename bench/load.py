"""Driving a service: closed-loop throughput with N calls in flight, and percentiles."""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from bench.procfs import CpuMeter

T = TypeVar("T")


@dataclass(frozen=True)
class Throughput:
    calls: int  # completed inside the measured window
    seconds: float
    cpu: dict[str, float] = field(default_factory=dict)  # cores per process, same window

    @property
    def per_second(self) -> float:
        return self.calls / self.seconds


async def closed_loop(
    call: Callable[[int], Awaitable[object]],
    *,
    concurrency: int,
    seconds: float,
    warmup: float,
    meter: CpuMeter | None = None,
) -> Throughput:
    """`concurrency` workers call back to back for `warmup + seconds`; only calls that
    finish inside the last `seconds` count. `call` gets a run-wide unique number. Any
    failed call fails the run: a figure over errors would flatter the service."""
    counter = itertools.count()
    start = time.monotonic()
    measure_from = start + warmup
    end = measure_from + seconds
    completed = 0

    async def worker() -> None:
        nonlocal completed
        while time.monotonic() < end:
            await call(next(counter))
            finished = time.monotonic()
            if measure_from <= finished <= end:
                completed += 1

    async def metering() -> dict[str, float]:
        if meter is None:
            return {}
        await asyncio.sleep(warmup)
        meter.start()
        await asyncio.sleep(seconds)
        return meter.stop()

    metered = asyncio.create_task(metering())
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Throughput(completed, seconds, await metered)


async def bounded_gather(
    call: Callable[[int], Awaitable[T]], count: int, concurrency: int
) -> list[T]:
    """`call(0) .. call(count - 1)`, at most `concurrency` at a time; results in order."""
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> T:
        async with gate:
            return await call(i)

    return list(await asyncio.gather(*(one(i) for i in range(count))))


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]
