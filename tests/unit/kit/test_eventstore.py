"""IdleCheck: a pooled connection is pinged on checkout only after it sat idle."""

from __future__ import annotations

import contextlib

import pytest
from eventsourcing.persistence import IntegrityError, InternalError, ProgrammingError

from kizuna_kit.eventstore import open_application
from kizuna_kit.sql import IdleCheck


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Conn:
    """What psycopg_pool's check_connection touches: autocommit and execute."""

    autocommit = True

    def __init__(self) -> None:
        self.pings = 0

    def execute(self, query: str) -> None:
        assert query == ""
        self.pings += 1


def test_first_checkout_and_checkouts_after_idle_are_pinged_busy_ones_are_not() -> None:
    clock = Clock()
    check = IdleCheck(idle_s=1.0, clock=clock)
    a, b = Conn(), Conn()
    check(a)
    assert a.pings == 1  # never seen: checked
    for _ in range(5):
        clock.now += 0.5
        check(a)
    assert a.pings == 1  # handed out every 0.5 s: never idle long enough
    check(b)
    assert b.pings == 1  # each connection has its own history
    clock.now += 1.01
    check(a)
    assert a.pings == 2


def test_a_failed_ping_leaves_the_connection_unseen() -> None:
    clock = Clock()
    check = IdleCheck(idle_s=1.0, clock=clock)

    class Broken(Conn):
        def execute(self, query: str) -> None:
            self.pings += 1
            raise OSError("server closed the connection")

    conn = Broken()
    for _ in range(2):
        with contextlib.suppress(OSError):
            check(conn)
    assert conn.pings == 2  # not marked as checked, so the next checkout pings again


@pytest.mark.parametrize(
    "lost",
    [
        IntegrityError("duplicate key value ... Key (typname)=(stored_event_uuid) already exists"),
        InternalError("tuple concurrently updated"),
        ProgrammingError('type "identity_events" already exists'),
    ],
)
def test_a_replica_that_lost_the_table_creation_race_tries_again(lost: Exception) -> None:
    attempts: list[int] = []

    def factory() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise lost
        return "app"

    assert open_application(factory) == "app"
    assert len(attempts) == 2


def test_other_start_up_errors_are_not_retried() -> None:
    attempts: list[int] = []

    def factory() -> str:
        attempts.append(1)
        raise InternalError("out of shared memory")

    with pytest.raises(InternalError):
        open_application(factory)
    assert len(attempts) == 1
