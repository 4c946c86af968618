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
            outcomes = await asyncio.to_thread(
                commit_or_each, self._commit, [item for item, _ in batch]
            )
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                _settle(future, outcome)


def commit_or_each(
    commit: Callable[[Sequence[T]], Sequence[R]], items: Sequence[T]
) -> list[R | Exception]:
    """Commits `items` as one batch; if that raises for several, commits each alone, so
    one bad item fails only its own caller. One outcome (result or error) per item, in
    order; shared by GroupCommit and ThreadGroupCommit."""
    try:
        return list(_commit_checked(commit, items))
    except Exception as exc:
        if len(items) == 1:
            return [exc]
    outcomes: list[R | Exception] = []
    for item in items:
        try:
            outcomes.append(_commit_checked(commit, [item])[0])
        except Exception as single:
            outcomes.append(single)
    return outcomes


def _commit_checked(
    commit: Callable[[Sequence[T]], Sequence[R]], items: Sequence[T]
) -> Sequence[R]:
    results = commit(items)
    if len(results) != len(items):
        raise RuntimeError(f"commit returned {len(results)} results for {len(items)} items")
    return results


def _settle(future: asyncio.Future[R], outcome: R | Exception) -> None:
    if future.done():
        return
    if isinstance(outcome, Exception):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
