"""Read-your-writes on the server side: a read that names a position waits, within the
call's deadline (and at most MAX_WAIT_SECONDS), until what it reads has reached it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import grpc

from kizuna_kit.errors import RequestError

MAX_WAIT_SECONDS = 10.0
POLL_SECONDS = 0.02


async def wait_until_reached(reached: Callable[[], bool], context: Any, what: str) -> None:
    """Returns once `reached()` (blocking; run on a thread) is true; DEADLINE_EXCEEDED
    (POSITION_NOT_REACHED) when the wait runs out first."""
    remaining = context.time_remaining() if context is not None else None
    deadline = time.monotonic() + min(remaining or MAX_WAIT_SECONDS, MAX_WAIT_SECONDS)
    while not await asyncio.to_thread(reached):
        if time.monotonic() >= deadline:
            raise RequestError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                "POSITION_NOT_REACHED",
                f"{what} has not reached that position yet",
            )
        await asyncio.sleep(POLL_SECONDS)
