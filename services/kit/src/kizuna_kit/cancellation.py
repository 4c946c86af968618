"""Stopping asyncio tasks for certain.

On Python 3.11 `asyncio.wait_for` swallows a cancellation that arrives as its inner
future completes, and the cancelled task runs on. nats-py waits on every request with
`wait_for`, so a lease renewal or a fetch in flight at shutdown can eat the one
cancellation a service sends its background tasks, which then never stop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from typing import Any


async def cancel_and_wait(tasks: Collection[asyncio.Future[Any]], every: float = 0.5) -> None:
    """Cancels `tasks` and returns once every one is done, cancelling again every `every`
    seconds those that are still running. Their results and exceptions are dropped."""
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=every)
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved: asyncio would log it as never retrieved
