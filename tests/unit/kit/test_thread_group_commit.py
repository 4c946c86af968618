from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

from kizuna_kit.thread_group_commit import ThreadGroupCommit


class Gate:
    """Holds the first commit until every other item is queued behind it."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.open = threading.Event()

    def hold(self) -> None:
        self.reached.set()
        assert self.open.wait(5)


def until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 5
    while not condition():
        assert time.monotonic() < deadline, "condition not met within 5 s"
        time.sleep(0.001)


def submit_while_first_commits(
    group: ThreadGroupCommit[int, int], gate: Gate, rest: Sequence[int]
) -> list[object]:
    """Submits 0; once its commit is held at `gate`, submits `rest` and opens the gate
    when all of it is queued. Outcomes in that order."""

    def outcome(item: int) -> object:
        try:
            return group.submit(item)
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(len(rest) + 1) as pool:
        first = pool.submit(outcome, 0)
        assert gate.reached.wait(5)
        others = [pool.submit(outcome, i) for i in rest]
        until(lambda: group.waiting == len(rest))
        gate.open.set()
        return [first.result(5), *(f.result(5) for f in others)]


def test_threads_arriving_during_a_commit_share_the_next_one() -> None:
    batches: list[list[int]] = []
    gate = Gate()

    def commit(items: Sequence[int]) -> list[int]:
        gate.hold()
        batches.append(list(items))
        return [i * 10 for i in items]

    group: ThreadGroupCommit[int, int] = ThreadGroupCommit(commit)
    results = submit_while_first_commits(group, gate, range(1, 30))
    assert results == [i * 10 for i in range(30)]
    assert batches[0] == [0]
    assert sorted(batches[1]) == list(range(1, 30))
    assert len(batches) == 2


def test_batches_are_capped() -> None:
    batches: list[list[int]] = []
    gate = Gate()

    def commit(items: Sequence[int]) -> list[int]:
        gate.hold()
        batches.append(list(items))
        return list(items)

    group: ThreadGroupCommit[int, int] = ThreadGroupCommit(commit, max_batch=4)
    assert submit_while_first_commits(group, gate, range(1, 11)) == list(range(11))
    assert [len(b) for b in batches] == [1, 4, 4, 2]


def test_one_bad_item_fails_only_its_own_caller() -> None:
    gate = Gate()

    def commit(items: Sequence[int]) -> list[int]:
        gate.hold()
        if 13 in items:
            raise ValueError("unlucky")
        return list(items)

    group: ThreadGroupCommit[int, int] = ThreadGroupCommit(commit)
    outcomes = submit_while_first_commits(group, gate, (12, 13, 14))
    assert outcomes[:2] == [0, 12]
    assert isinstance(outcomes[2], ValueError)
    assert outcomes[3] == 14


def test_a_lone_failure_reaches_its_caller_and_the_next_commit_proceeds() -> None:
    def commit(items: Sequence[int]) -> list[int]:
        if items == [1]:
            raise RuntimeError("disk full")
        return list(items)

    group: ThreadGroupCommit[int, int] = ThreadGroupCommit(commit)
    with pytest.raises(RuntimeError, match="disk full"):
        group.submit(1)
    assert group.submit(2) == 2


def test_a_commit_answering_for_the_wrong_number_of_items_fails_its_callers() -> None:
    group: ThreadGroupCommit[int, int] = ThreadGroupCommit(lambda items: [])
    with pytest.raises(RuntimeError, match="0 results for 1 items"):
        group.submit(1)
