"""Group commit for callers on threads: whoever arrives while a batch commits waits, then
one of the waiters commits everything queued meanwhile in one transaction.

The asyncio twin is `group_commit.GroupCommit`; this one serves code that already runs
on worker threads (an eventsourcing application), with no event loop to hop through.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from kizuna_kit.group_commit import commit_or_each

T = TypeVar("T")
R = TypeVar("R")


class _Slot(Generic[T, R]):
    __slots__ = ("error", "item", "result", "settled")

    def __init__(self, item: T) -> None:
        self.item = item
        self.result: R | None = None
        self.error: BaseException | None = None
        self.settled = False


class ThreadGroupCommit(Generic[T, R]):
    def __init__(self, commit: Callable[[Sequence[T]], Sequence[R]], max_batch: int = 256) -> None:
        """`commit` gets a batch and returns one result per item, in order; if it raises
        for a batch of several, each item is committed alone so one bad item fails only
        its own caller."""
        self._commit = commit
        self._max_batch = max_batch
        self._changed = threading.Condition()
        self._queue: list[_Slot[T, R]] = []
        self._busy = False

    @property
    def waiting(self) -> int:
        """Items queued for the next commit."""
        return len(self._queue)

    def submit(self, item: T) -> R:
        slot: _Slot[T, R] = _Slot(item)
        with self._changed:
            self._queue.append(slot)
            while not slot.settled:
                if self._busy:
                    self._changed.wait()
                    continue
                self._busy = True
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
                self._changed.release()
                try:
                    self._settle(batch)
                except BaseException as exc:  # e.g. KeyboardInterrupt: nobody waits forever
                    for waiting in batch:
                        if not waiting.settled:
                            waiting.error, waiting.settled = exc, True
                    raise
                finally:
                    self._changed.acquire()
                    self._busy = False
                    self._changed.notify_all()
        if slot.error is not None:
            raise slot.error
        return slot.result  # type: ignore[return-value]

    def _settle(self, batch: list[_Slot[T, R]]) -> None:
        outcomes = commit_or_each(self._commit, [slot.item for slot in batch])
        for slot, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, Exception):
                slot.error = outcome
            else:
                slot.result = outcome
            slot.settled = True
