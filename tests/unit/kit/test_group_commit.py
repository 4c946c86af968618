from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest

from kizuna_kit.group_commit import GroupCommit
from kizuna_kit.testing.waiting import eventually


async def test_concurrent_submits_share_commits_and_keep_their_results() -> None:
    batches: list[list[int]] = []
    gate, reached = threading.Event(), threading.Event()

    def commit(items: Sequence[int]) -> list[int]:
        reached.set()
        gate.wait(5)  # the first commit is slow, so the others queue up behind it
        batches.append(list(items))
        return [i * 10 for i in items]

    group: GroupCommit[int, int] = GroupCommit(commit)
    first = asyncio.create_task(group.submit(0))
    await eventually(lambda: reached.is_set())
    rest = [asyncio.create_task(group.submit(i)) for i in range(1, 50)]
    await eventually(lambda: group.waiting == 49)
    gate.set()
    results = await asyncio.gather(first, *rest)
    assert results == [i * 10 for i in range(50)]
    assert batches == [[0], list(range(1, 50))]


async def test_one_bad_item_fails_only_its_own_caller() -> None:
    gate, reached = threading.Event(), threading.Event()

    def commit(items: Sequence[int]) -> list[int]:
        reached.set()
        gate.wait(5)
        if 13 in items:
            raise ValueError("unlucky")
        return list(items)

    group: GroupCommit[int, int] = GroupCommit(commit)
    first = asyncio.create_task(group.submit(0))
    await eventually(lambda: reached.is_set())
    rest = [asyncio.create_task(group.submit(i)) for i in (12, 13, 14)]
    await eventually(lambda: group.waiting == 3)
    gate.set()
    outcomes = await asyncio.gather(first, *rest, return_exceptions=True)
    assert outcomes[:2] == [0, 12]
    assert isinstance(outcomes[2], ValueError)
    assert outcomes[3] == 14


async def test_a_failed_commit_fails_every_caller_of_that_batch_only() -> None:
    calls = 0

    def commit(items: Sequence[int]) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("disk full")
        return list(items)

    group: GroupCommit[int, int] = GroupCommit(commit)
    with pytest.raises(RuntimeError, match="disk full"):
        await group.submit(1)
    assert await group.submit(2) == 2


async def test_batches_are_capped() -> None:
    sizes: list[int] = []

    def commit(items: Sequence[int]) -> list[int]:
        sizes.append(len(items))
        return list(items)

    group: GroupCommit[int, int] = GroupCommit(commit, max_batch=10)
    await asyncio.gather(*(group.submit(i) for i in range(35)))
    assert max(sizes) <= 10
    assert sum(sizes) == 35


async def test_a_commit_answering_for_the_wrong_number_of_items_fails_its_callers() -> None:
    group: GroupCommit[int, int] = GroupCommit(lambda items: [])
    with pytest.raises(RuntimeError, match="0 results for 1 items"):
        await asyncio.wait_for(group.submit(1), 5)
