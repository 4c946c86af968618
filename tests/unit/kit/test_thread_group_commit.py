from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

from kizuna_kit.thread_group_commit import ThreadGroupCommit


def submit_while_first_commits(
    group: ThreadGroupCommit[int, int], gate: threading.Event, rest: Sequence[int]
) -> list[object]:
    """Submits 0, then `rest` while 0's commit is held at `gate`; outcomes in that order."""

    def outcome(item: int) -> object:
        try:
            return group.submit(item)
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(len(rest) + 1) as pool:
        first = pool.submit(outcome, 0)
        time.sleep(0.05)
        others = [pool.submit(outcome, i) for i in rest]
        time.sleep(0.05)
        gate.set()
        return [first.result(5), *(f.result(5) for f in others)]


def test_threads_arriving_during_a_commit_share_the_next_one() -> None:
    batches: list[list[int]] = []
    gate = threading.Event()

    def commit(items: Sequence[int]) -> list[int]:
        gate.wait(5)
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
    gate = threading.Event()

    def commit(items: Sequence[int]) -> list[int]:
        gate.wait(5)
        batches.append(list(items))
        return list(items)

    group: ThreadGroupCommit[int, int] = ThreadGroupCommit(commit, max_batch=4)
    assert submit_while_first_commits(group, gate, range(1, 11)) == list(range(11))
    assert [len(b) for b in batches] == [1, 4, 4, 2]


def test_one_bad_item_fails_only_its_own_caller() -> None:
    gate = threading.Event()

    def commit(items: Sequence[int]) -> list[int]:
        gate.wait(5)
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
