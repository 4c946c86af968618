"""The ledger on SQLite (the default): one file, WAL, fsync on every commit.

Each thread has its own connection (sqlite3 connections are not for sharing). Writers are
serialized by `BEGIN IMMEDIATE`, SQLite's single write lock, which also guards against
another process; inside this process they first queue on a plain lock, which is fair and
cheaper than SQLite's busy-wait polling when many threads append at once.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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

DIALECT = Dialect(integer="INTEGER", text="TEXT", blob="BLOB")
BUSY_TIMEOUT_S = 30.0

TRIGGERS = [
    f"""CREATE TRIGGER IF NOT EXISTS {table}_no_{op.lower()} BEFORE {op} ON {table}
    BEGIN SELECT RAISE(ABORT, '{table} is append-only: {op} refused'); END"""
    for table in APPEND_ONLY_TABLES
    for op in ("UPDATE", "DELETE")
]


class SqliteLedgerStore(SqlLedgerStore):
    # SQLite has no LATERAL: the winner's sequence comes from a correlated
    # "ORDER BY ... LIMIT 1" (an index-only range scan), then one rowid lookup.
    _state_sql = f"""{STATEMENT_IDS_CTE}
        SELECT t.statement_id, t.decision, t.version, t.effective_at, t.recorded_at,
               t.record_id, t.sequence
        FROM ids JOIN timeline AS t ON t.sequence = (
            SELECT sequence FROM timeline
            WHERE subject_id = :subject AND statement_id = ids.statement_id
              AND effective_at <= :at{{filters}}
            ORDER BY {WINNER_ORDER_SQL} LIMIT 1
        )"""  # noqa: S608
    # Streamed in index order, no sort: the first row of each (subject, statement) is its
    # winner. (A window function would need a temp B-tree to order its output.)
    _export_sql = f"""
        SELECT subject_id, {ENTRY_COLUMNS} FROM timeline WHERE effective_at <= :at{{filters}}
        ORDER BY subject_id, statement_id, {WINNER_ORDER_SQL}"""  # noqa: S608

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._closed = False
        self._create_schema()

    def close(self) -> None:
        with self._connections_lock:
            self._closed = True
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()

    # Connections and transactions -------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: no implicit transactions; writes say BEGIN IMMEDIATE.
        conn = sqlite3.connect(
            self._path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        # FULL: the WAL is fsynced at every commit, so an acknowledged append survives a
        # power cut (NORMAL would only survive a process crash).
        conn.execute("PRAGMA synchronous = FULL")
        return conn

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            with self._connections_lock:
                if self._closed:
                    conn.close()
                    raise sqlite3.ProgrammingError("the ledger store is closed")
                self._connections.append(conn)
            self._local.conn = conn
        return conn

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Cursor]:
        # Closing the cursor ends its statement: a half-read statement would pin this
        # connection's snapshot and make later reads on it stale.
        cur = self._connection().cursor()
        try:
            yield cur
        finally:
            cur.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Cursor]:
        conn = self._connection()
        with self._write_lock:
            conn.execute("BEGIN IMMEDIATE")
            cur = conn.cursor()
            try:
                yield cur
                cur.close()
                conn.execute("COMMIT")
            except BaseException:
                cur.close()
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def _stream(self, sql: str, params: Params) -> Iterator[Row]:
        # A connection of its own: the stream may outlive this thread's other work, and its
        # single statement reads one consistent snapshot without blocking writers (WAL).
        conn = self._connect()
        try:
            yield from conn.execute(sql, params)
        finally:
            conn.close()

    def _create_schema(self) -> None:
        conn = self._connection()
        (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"cannot use WAL for {self._path} (got {mode})")
        with self._write() as cur:
            for ddl in [*schema(DIALECT), *TRIGGERS]:
                cur.execute(ddl)
            for sql, params in SEED:
                cur.execute(sql, params)
