"""Waiting on a condition with a deadline, instead of fixed sleeps."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


async def eventually(
    predicate: Callable[[], bool | Awaitable[bool]], within: float = 60.0, every: float = 0.05
) -> None:
    """Returns once `predicate` holds; errors while waiting count as "not yet"."""
    deadline = time.monotonic() + within
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result if isinstance(result, bool) else await result:
                return
        except Exception as exc:  # e.g. a server that is still coming back
            last_error = exc
        await asyncio.sleep(every)
    raise AssertionError(f"condition not met within {within} s (last error: {last_error!r})")
