"""cancel_and_wait: a task that swallows a cancellation is cancelled again."""

from __future__ import annotations

import asyncio
import contextlib

from kizuna_kit.cancellation import cancel_and_wait


async def swallows_one_cancellation(started: asyncio.Event) -> None:
    started.set()
    # As asyncio.wait_for does on Python 3.11 when its future completes meanwhile:
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.Event().wait()
    await asyncio.Event().wait()


async def fails() -> None:
    raise RuntimeError("boom")


async def test_a_task_that_swallows_a_cancellation_is_cancelled_again() -> None:
    started = asyncio.Event()
    stubborn = asyncio.create_task(swallows_one_cancellation(started))
    failed = asyncio.create_task(fails())
    finished = asyncio.create_task(asyncio.sleep(0))
    await started.wait()
    await asyncio.sleep(0)  # `failed` and `finished` run to their end

    await asyncio.wait_for(cancel_and_wait([stubborn, failed, finished], every=0.01), 10)

    assert stubborn.cancelled()
    assert isinstance(failed.exception(), RuntimeError)
    assert finished.done()
    assert not finished.cancelled()


async def test_nothing_to_cancel_returns_at_once() -> None:
    await asyncio.wait_for(cancel_and_wait([]), 10)
