"""The ledger on PostgreSQL (psycopg 3 and a connection pool), for production.

Writers are serialized by `SELECT ... FROM ledger_head WHERE id = 1 FOR UPDATE`, taken
first in every write transaction; the lock statement returns the head itself, so an
append reads the state it builds on in the same round trip. Write transactions run in
pipeline mode: everything after the last read (the batch's inserts, the head update and
COMMIT) goes to the server in one round trip. synchronous_commit is left as configured
(on by default): a commit returns once it is durable.
"""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import psycopg
from psycopg_pool import ConnectionPool

from kizuna_consent.domain.state import WINNER_ORDER_SQL
from kizuna_consent.storage.common import (
    APPEND_ONLY_TABLES,
    ENTRY_COLUMNS,
    SEED,
    STATEMENT_IDS_CTE,
    Dialect,
    Params,
    Row,
    SqlLedgerStore,
    schema,
)

# COLLATE "C": byte-wise comparison, so canonical instants order as time and ids order
# the same on both backends, whatever the database's locale.
DIALECT = Dialect(integer="BIGINT", text='TEXT COLLATE "C"', blob="BYTEA")
CONNECT_TIMEOUT_S = 30.0
STREAM_CHUNK = 5000
# Serializes concurrent schema creation (two replicas starting at once).
SCHEMA_LOCK = 0x6B697A756E61  # "kizuna"

TRIGGERS = [
    """CREATE OR REPLACE FUNCTION kizuna_append_only() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
            USING ERRCODE = 'restrict_violation';
    END
    $$""",
    *(
        f"""CREATE OR REPLACE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table}
        FOR EACH ROW EXECUTE FUNCTION kizuna_append_only()"""
        for table in APPEND_ONLY_TABLES
    ),
    *(
        f"""CREATE OR REPLACE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}
        FOR EACH STATEMENT EXECUTE FUNCTION kizuna_append_only()"""
        for table in APPEND_ONLY_TABLES
    ),
]

_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


@functools.lru_cache(maxsize=1024)
def pyformat(sql: str) -> str:
    """The shared `:name` SQL in psycopg's `%(name)s` style (`::type` casts untouched)."""
    return _NAMED.sub(r"%(\1)s", sql.replace("%", "%%"))


class PgCursor:
    """A psycopg cursor that speaks the shared `:name` SQL."""

    def __init__(self, cursor: psycopg.Cursor[Row]) -> None:
        self._cursor = cursor

    def execute(self, sql: str, params: Params | None = None, /) -> None:
        self._cursor.execute(pyformat(sql), params or {})

    def executemany(self, sql: str, params: Iterable[Params], /) -> None:
        self._cursor.executemany(pyformat(sql), params)

    def fetchone(self) -> Row | None:
        return self._cursor.fetchone()

    def fetchall(self) -> list[Row]:
        return self._cursor.fetchall()


class PostgresLedgerStore(SqlLedgerStore):
    _lock_clause = " FOR UPDATE"
    # One index probe per statement id (LATERAL ... LIMIT 1), however many records the
    # subject has; DISTINCT ON would read every one of them.
    _state_sql = f"""{STATEMENT_IDS_CTE}
        SELECT w.* FROM ids CROSS JOIN LATERAL (
            SELECT {ENTRY_COLUMNS} FROM timeline
            WHERE subject_id = :subject AND statement_id = ids.statement_id
              AND effective_at <= :at{{filters}}
            ORDER BY {WINNER_ORDER_SQL} LIMIT 1
        ) AS w"""  # noqa: S608
    # Reads timeline_winner in its own order: no sort, one pass over the index.
    _export_sql = f"""
        SELECT DISTINCT ON (subject_id, statement_id) subject_id, {ENTRY_COLUMNS}
        FROM timeline WHERE effective_at <= :at{{filters}}
        ORDER BY subject_id, statement_id, {WINNER_ORDER_SQL}"""  # noqa: S608

    def __init__(self, url: str, pool_size: int = 8) -> None:
        self._pool = ConnectionPool(
            url,
            min_size=pool_size,
            max_size=pool_size,
            kwargs={"autocommit": False},
            # A connection broken by a server restart is replaced, not handed out.
            check=ConnectionPool.check_connection,
            name="kizuna-consent",
            open=False,
        )
        self._pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
        try:
            self._create_schema()
        except BaseException:
            self._pool.close()
            raise

    def close(self) -> None:
        self._pool.close()

    # Connections and transactions -------------------------------------------------------

    @contextmanager
    def _read(self) -> Iterator[PgCursor]:
        with self._pool.connection() as conn, conn.cursor() as cur:
            yield PgCursor(cur)

    @contextmanager
    def _write(self) -> Iterator[PgCursor]:
        # Pipeline outside the transaction, so COMMIT travels with the last writes; a fetch
        # (the head lock, an idempotency lookup) still waits for its result.
        with (
            self._pool.connection() as conn,
            conn.pipeline(),
            conn.transaction(),
            conn.cursor() as cur,
        ):
            yield PgCursor(cur)

    def _stream(self, sql: str, params: Params) -> Iterator[Row]:
        # A server-side (named) cursor: rows arrive STREAM_CHUNK at a time.
        name = f"kizuna_{uuid.uuid4().hex}"
        with self._pool.connection() as conn, conn.cursor(name) as cur:
            cur.itersize = STREAM_CHUNK
            cur.execute(pyformat(sql), params)
            yield from cur

    def _create_schema(self) -> None:
        with self._pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", [SCHEMA_LOCK])
            for ddl in [*schema(DIALECT), *TRIGGERS]:
                conn.execute(ddl)
            for sql, params in SEED:
                conn.execute(pyformat(sql), params)
