"""kizuna_kit.sql against real SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kizuna_kit.sql import Database, PostgresDatabase, SqliteDatabase

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
