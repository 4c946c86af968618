"""kizuna_kit.sql against real SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from kizuna_kit.sql import Cursor, Database, PostgresDatabase, SqliteDatabase

pytestmark = pytest.mark.integration


@pytest.fixture
def db(tmp_path: Path, database_url: str | None) -> Iterator[Database]:
    database: Database = (
        SqliteDatabase(tmp_path / "kit.db")
        if database_url is None
        else PostgresDatabase(database_url, 2, name="kit-test")
    )
    database.setup(
        [f"CREATE TABLE IF NOT EXISTS numbers (n {database.dialect.integer} PRIMARY KEY)"]
    )
    try:
        yield database
    finally:
        database.close()


def fill(db: Database, count: int) -> None:
    with db.write() as cur:
        cur.executemany("INSERT INTO numbers (n) VALUES (:n)", [{"n": n} for n in range(count)])


@pytest.mark.parametrize("count", [0, 1, 999, 1000, 1001, 2500])
def test_stream_chunks_hands_out_every_row_in_full_chunks(db: Database, count: int) -> None:
    fill(db, count)
    sql = "SELECT n FROM numbers WHERE n >= :start ORDER BY n"
    chunks = list(db.stream_chunks(sql, {"start": 0}, 1000))
    assert all(chunks), "never an empty chunk"
    assert [len(c) for c in chunks[:-1]] == [1000] * (len(chunks) - 1)
    assert [row[0] for chunk in chunks for row in chunk] == list(range(count))
    assert [row[0] for chunk in chunks for row in chunk] == [
        r[0] for r in db.stream(sql, {"start": 0})
    ]


def test_stream_chunks_stopped_early_gives_its_connection_back(db: Database) -> None:
    fill(db, 3000)
    for _ in range(5):  # more than the pool holds: each abandoned stream must return its own
        chunks = db.stream_chunks("SELECT n FROM numbers ORDER BY n", {}, 100)
        assert len(next(chunks)) == 100
        chunks.close()
    with db.read() as cur:
        cur.execute("SELECT count(*) FROM numbers")
        assert cur.fetchone()[0] == 3000


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def hot_pg(postgres_url: str, clock: Clock) -> Iterator[PostgresDatabase]:
    database = PostgresDatabase(
        postgres_url,
        2,
        name="kit-test-hot",
        check_after_idle_s=0.2,
        autocommit_reads=True,
        clock=clock,
    )
    database.setup(["CREATE TABLE IF NOT EXISTS numbers (n BIGINT PRIMARY KEY)"])
    try:
        yield database
    finally:
        database.close()


def backend_pids(db: PostgresDatabase) -> set[int]:
    pids = set()
    for _ in range(4):
        with db.read() as cur:
            cur.execute("SELECT pg_backend_pid()")
            pids.add(cur.fetchall()[0][0])
    return pids


def in_transaction(cur: Cursor) -> bool:
    """Whether consecutive statements on this cursor share one transaction."""
    cur.execute("SELECT txid_current()")
    first = cur.fetchone()
    cur.execute("SELECT txid_current()")  # a new transaction gets a new id
    return bool(first == cur.fetchone())


def write_then_fail(db: Database) -> None:
    with db.write() as cur:
        cur.execute("INSERT INTO numbers (n) VALUES (:n)", {"n": 1})
        raise RuntimeError("rolled back")


def test_autocommit_reads_leave_no_transaction_open_and_writes_stay_atomic(
    hot_pg: PostgresDatabase,
) -> None:
    for _ in range(3):  # over both connections of the pool
        with hot_pg.read() as cur:
            assert not in_transaction(cur)
        with hot_pg.write() as cur:
            assert in_transaction(cur)
    with pytest.raises(psycopg.errors.UndefinedTable), hot_pg.read() as cur:
        cur.execute("SELECT * FROM no_such_table")
    with pytest.raises(RuntimeError):
        write_then_fail(hot_pg)
    fill(hot_pg, 3)
    with hot_pg.read() as cur:
        cur.execute("SELECT count(*) FROM numbers")
        assert cur.fetchone() == (3,)


def test_a_connection_idle_longer_than_the_threshold_is_checked_and_replaced(
    hot_pg: PostgresDatabase, postgres_url: str, clock: Clock
) -> None:
    before = backend_pids(hot_pg)
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    clock.now += 0.4  # past check_after_idle_s: checked on checkout, broken ones replaced
    after = backend_pids(hot_pg)
    assert after.isdisjoint(before)
