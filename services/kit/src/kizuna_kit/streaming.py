"""Streaming a blocking iterator (a database cursor) to an async caller.

The iterator lives on ONE worker thread from start to end (cursors and connections
are not to be shared across threads) and hands over rows in chunks, so a long
export costs one thread hop per chunk, not per row. A slow or gone client stops
the producer instead of letting it buffer without bound.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncGenerator, Callable, Iterator
from typing import TypeVar

T = TypeVar("T")

_DONE = object()


async def stream_in_thread(
    produce: Callable[[], Iterator[T]], chunk: int = 1000, depth: int = 4
) -> AsyncGenerator[T, None]:
    handoff: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            batch: list[T] = []
            for item in produce():
                batch.append(item)
                if len(batch) >= chunk:
                    if not put(batch):
                        return
                    batch = []
            if batch:
                put(batch)
            put(_DONE)
        except BaseException as exc:  # handed to the consumer, raised there
            put(exc)

    worker = asyncio.get_running_loop().run_in_executor(None, run)
    try:
        while True:
            item = await asyncio.to_thread(handoff.get)
            if item is _DONE:
                break
            if isinstance(item, BaseException):
                raise item
            for row in item:  # type: ignore[attr-defined]
                yield row
    finally:
        stop.set()
        await asyncio.shield(worker)
