"""Group commit: concurrent writes queue up while one batch commits, then go together.

One durable commit (one fsync) then serves many callers, which is what lets a
ledger that must serialize its appends keep up with many concurrent clients.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    def __init__(self, commit: Callable[[Sequence[T]], Sequence[R]], max_batch: int = 512) -> None:
        """`commit` runs in a worker thread and returns one result per item, in order."""
        self._commit = commit
        self._max_batch = max_batch
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._worker: asyncio.Task[None] | None = None

    @property
    def waiting(self) -> int:
        """Items queued for the next commit."""
        return len(self._queue)

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
            try:
                results = await asyncio.to_thread(self._commit, [item for item, _ in batch])
            except Exception as exc:
                if len(batch) == 1:
                    _settle(batch[0][1], exc)
                    continue
                # One bad item must not fail its neighbours: commit them one by one.
                for item, future in batch:
                    try:
                        _settle(future, (await asyncio.to_thread(self._commit, [item]))[0])
                    except Exception as single:
                        _settle(future, single)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                _settle(future, result)


def _settle(future: asyncio.Future[R], outcome: R | Exception) -> None:
    if future.done():
        return
    if isinstance(outcome, Exception):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
