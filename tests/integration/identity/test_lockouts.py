"""The login lock-out every identity replica shares, on SQLite and PostgreSQL: two
throttles on one database stand for two replicas."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from kizuna_identity import lockouts
from kizuna_identity.lockouts import SharedLoginThrottle, open_lockouts
from kizuna_identity.throttle import ThrottlePolicy

LOGIN = "tanaka@example.jp"


class Clock:
    def __init__(self) -> None:
        self.now = 1_770_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


Replicas = Callable[[ThrottlePolicy], list[SharedLoginThrottle]]
# 3 failures within 60 s lock the login for 120 s.
POLICY = ThrottlePolicy(max_failures=3, window_seconds=60, lockout_seconds=120)


@pytest.fixture
def open_replicas(database_url: str | None, tmp_path: Path, clock: Clock) -> Iterator[Replicas]:
    """Two throttles on one database, as two replicas have."""
    opened: list[SharedLoginThrottle] = []

    def open_two(policy: ThrottlePolicy) -> list[SharedLoginThrottle]:
        path = tmp_path / "lockouts.sqlite"
        pair = [open_lockouts(database_url, path, policy, clock=clock) for _ in "ab"]
        opened.extend(pair)
        return pair

    yield open_two
    for throttle in opened:
        throttle.close()


@pytest.fixture
def replicas(open_replicas: Replicas) -> list[SharedLoginThrottle]:
    return open_replicas(POLICY)


def test_failures_on_either_replica_lock_the_login_on_both(
    replicas: list[SharedLoginThrottle], clock: Clock
) -> None:
    a, b = replicas
    a.failed(LOGIN)
    b.failed(LOGIN)
    assert (a.retry_after(LOGIN), b.retry_after(LOGIN)) == (0, 0)
    a.failed(LOGIN)
    assert (a.retry_after(LOGIN), b.retry_after(LOGIN)) == (120, 120)
    assert b.retry_after("sato@example.jp") == 0
    clock.now += 119.5
    assert b.retry_after(LOGIN) == 1
    clock.now += 0.5
    assert (a.retry_after(LOGIN), b.retry_after(LOGIN)) == (0, 0)


def test_old_failures_leave_the_window_and_a_success_forgets_the_rest(
    replicas: list[SharedLoginThrottle], clock: Clock
) -> None:
    a, b = replicas
    a.failed(LOGIN)
    a.failed(LOGIN)
    clock.now += 61
    b.failed(LOGIN)  # the first two are out of the window: this one starts a new one
    b.failed(LOGIN)
    assert a.retry_after(LOGIN) == 0
    a.succeeded(LOGIN)
    b.failed(LOGIN)
    b.failed(LOGIN)
    assert a.retry_after(LOGIN) == 0


def test_a_success_elsewhere_does_not_lift_a_lock(
    replicas: list[SharedLoginThrottle],
) -> None:
    a, b = replicas
    for _ in range(3):
        a.failed(LOGIN)
    b.succeeded(LOGIN)  # a login that passed its check just before the lock
    assert b.retry_after(LOGIN) == 120


def test_concurrent_failures_are_each_counted(open_replicas: Replicas) -> None:
    a, b = open_replicas(ThrottlePolicy(max_failures=40, window_seconds=60, lockout_seconds=120))
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: (a, b)[i % 2].failed(LOGIN), range(39)))
    assert a.retry_after(LOGIN) == 0
    b.failed(LOGIN)
    assert a.retry_after(LOGIN) == 120


def test_a_limit_of_one_locks_at_the_first_failure(open_replicas: Replicas) -> None:
    a, b = open_replicas(ThrottlePolicy(max_failures=1, window_seconds=60, lockout_seconds=30))
    a.failed(LOGIN)
    assert b.retry_after(LOGIN) == 30


def test_the_table_holds_no_login_id_and_forgets_stale_rows(
    open_replicas: Replicas, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lockouts, "SWEEP_EVERY", 2)
    a, _ = open_replicas(POLICY)
    a.failed(LOGIN)
    with a._db.read() as cur:
        cur.execute("SELECT login_key FROM login_lockouts", {})
        assert [len(key) for (key,) in cur.fetchall()] == [64]  # a digest, not the id

    clock.now += 61
    a.failed("sato@example.jp")  # the second failure sweeps: Tanaka's window is over
    with a._db.read() as cur:
        cur.execute("SELECT count(*) FROM login_lockouts", {})
        assert cur.fetchone()[0] == 1
