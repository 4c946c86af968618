"""open_application on PostgreSQL: connections are checked after idle, not per checkout,
and one that died while idle is replaced before a caller meets it."""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

import psycopg
import pytest
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event

from kizuna_kit.eventstore import check_after_idle, eventsourcing_env, open_application
from kizuna_kit.sql import IDLE_CHECK_S, IdleCheck

pytestmark = pytest.mark.integration


class Counter(Aggregate):
    def __init__(self) -> None:
        self.count = 0

    @event("Incremented")
    def increment(self) -> None:
        self.count += 1


class Counters(Application[UUID]):
    pass


def backend_pids(app: Counters) -> set[int]:
    pool = app.recorder.datastore.pool  # type: ignore[attr-defined]
    pids = set()
    conns = [pool.getconn() for _ in range(pool.min_size)]
    try:
        for conn in conns:
            pids.add(conn.info.backend_pid)
    finally:
        for conn in conns:
            pool.putconn(conn)
    return pids


def test_idle_connections_killed_by_the_server_are_replaced_unseen(
    tmp_path: Path, postgres_url: str
) -> None:
    app = open_application(lambda: Counters(eventsourcing_env(postgres_url, tmp_path / "x", 2)))
    try:
        pool = app.recorder.datastore.pool  # type: ignore[attr-defined]
        assert isinstance(pool._check, IdleCheck)
        now = [0.0]
        check_after_idle(app, IdleCheck(clock=lambda: now[0]))  # time passes when told
        counter = Counter()
        app.save(counter)
        before = backend_pids(app)
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        now[0] += IDLE_CHECK_S + 0.1
        # Every checkout finds the dead connection checked and replaced: none fails.
        for _ in range(pool.min_size):
            with pool.connection() as conn:
                conn.execute("SELECT 1")
        assert backend_pids(app).isdisjoint(before)
        counter.increment()
        app.save(counter)
        assert app.repository.get(counter.id).count == 1
    finally:
        app.close()
