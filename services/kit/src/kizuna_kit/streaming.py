"""Streaming a blocking iterator (a database cursor) to an async caller.

The iterator runs on its own thread from start to end (cursors and connections are
not to be shared across threads, and a long export must not hold a worker of the
shared pool) and hands rows over in chunks, so a long export costs one loop wake-up
per chunk, not per row. At most `depth` chunks wait in between: a slow client slows
the producer, and a client that goes away stops it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Callable, Iterator
from typing import TypeVar

T = TypeVar("T")

_DONE = object()


async def stream_in_thread(
    produce: Callable[[], Iterator[T]], chunk: int = 1000, depth: int = 4
) -> AsyncGenerator[T, None]:
    loop = asyncio.get_running_loop()
    handoff: asyncio.Queue[object] = asyncio.Queue()
    room = threading.Semaphore(depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not room.acquire(timeout=0.1):
            if stop.is_set():
                return False
        try:
            loop.call_soon_threadsafe(handoff.put_nowait, item)
        except RuntimeError:  # the loop is gone: nobody will read this stream again
            return False
        return True

    def run() -> None:
        try:
            batch: list[T] = []
            for item in produce():
                batch.append(item)
                if len(batch) >= chunk:
                    if not put(batch):
                        return
                    batch = []
            if batch and not put(batch):
                return
            put(_DONE)
        except BaseException as exc:  # handed to the consumer, raised there
            put(exc)

    producer = threading.Thread(target=run, name="kizuna-stream", daemon=True)
    producer.start()
    try:
        while True:
            item = await handoff.get()
            room.release()
            if item is _DONE:
                break
            if isinstance(item, BaseException):
                raise item
            for row in item:  # type: ignore[attr-defined]
                yield row
    finally:
        stop.set()
