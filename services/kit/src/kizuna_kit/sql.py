"""SQL plumbing shared by the services' stores, with no domain in it.

A store writes its SQL once, with `:name` parameters, against `Database`: `read()` and
`write()` hand out a cursor (the latter inside one transaction, committed at exit and
rolled back on error), `stream()` yields the rows of a long query without holding them
all. Two implementations:

- `SqliteDatabase`: one file, WAL, `synchronous = FULL` (every commit fsynced), one
  connection per thread; writers serialized by `BEGIN IMMEDIATE` behind a fair in-process
  lock.
- `PostgresDatabase`: a psycopg 3 connection pool; write transactions in pipeline mode,
  so the statements after the last read travel with COMMIT in one round trip.
  synchronous_commit is left as configured (on by default): a commit returns once durable.
"""

from __future__ import annotations

import functools
import re
import sqlite3
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import psycopg
import psycopg.sql
from psycopg_pool import ConnectionPool

Row = tuple[Any, ...]
Params = Mapping[str, Any]


class Cursor(Protocol):
    """The part of a DB-API cursor the stores use; sqlite3's and `PgCursor` both fit."""

    def execute(self, sql: str, params: Params = ..., /) -> object: ...

    def executemany(self, sql: str, params: Iterable[Params], /) -> object: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


@dataclass(frozen=True)
class Dialect:
    """Column types: a 64-bit integer, text compared byte-wise, a byte string."""

    integer: str
    text: str
    blob: str


SQLITE = Dialect(integer="INTEGER", text="TEXT", blob="BLOB")
# COLLATE "C": byte-wise comparison, so canonical instants order as time and ids order
# the same on both backends, whatever the database's locale.
POSTGRES = Dialect(integer="BIGINT", text='TEXT COLLATE "C"', blob="BYTEA")


class Database(Protocol):
    dialect: Dialect

    def read(self) -> AbstractContextManager[Cursor]:
        """A cursor for reads; closed at exit."""

    def write(self) -> AbstractContextManager[Cursor]:
        """A cursor in one write transaction: committed at exit, rolled back on error."""

    def stream(self, sql: str, params: Params, *, binary: bool = False) -> Iterator[Row]:
        """Rows of a long query, fetched in chunks, without holding them all in memory.
        `binary`: where the backend has a choice, rows travel in binary form (cheaper for
        byte strings; values come back as the same Python types)."""

    def stream_chunks(
        self, sql: str, params: Params, size: int
    ) -> Generator[list[Row], None, None]:
        """The rows of `stream`, as lists of up to `size` rows (never an empty one): no
        per-row Python call between the database driver and the caller. Closing the
        generator early releases its connection."""

    def setup(self, ddl: Sequence[str], seed: Sequence[tuple[str, Params]] = ()) -> None:
        """Runs the schema statements, then the seed rows, in one transaction. They must be
        idempotent (IF NOT EXISTS, ON CONFLICT DO NOTHING): this runs at every start."""

    def close(self) -> None: ...


def select(columns: str, table: str, rest: str) -> str:
    """SQL is only ever assembled from a store's constants and placeholder names, never
    from values (which always travel as parameters)."""
    return f"SELECT {columns} FROM {table} {rest}"  # noqa: S608


def in_list(prefix: str, values: Iterable[str]) -> tuple[str, dict[str, str]]:
    """`(:p0, :p1, ...)` for `column IN ...` in either dialect, and its parameters (for a
    short list: a few hundred values)."""
    params = {f"{prefix}{i}": v for i, v in enumerate(values)}
    return "(" + ", ".join(":" + name for name in params) + ")", params


def insert(table: str, columns: str) -> str:
    """INSERT of one row, each column from the parameter of the same name."""
    names = ", ".join(":" + c for c in columns.split(", "))
    return f"INSERT INTO {table} ({columns}) VALUES ({names})"  # noqa: S608


# SQLite ---------------------------------------------------------------------------------

BUSY_TIMEOUT_S = 30.0


class SqliteDatabase:
    """One SQLite file. Each thread has its own connection (sqlite3 connections are not
    for sharing). `BEGIN IMMEDIATE` takes SQLite's single write lock, which also guards
    against another process; inside this process writers first queue on a plain lock,
    which is fair and cheaper than SQLite's busy-wait polling when many threads write."""

    dialect = SQLITE

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._closed = False
        mode = self._enable_wal()
        if str(mode).lower() != "wal":
            self.close()
            raise sqlite3.OperationalError(f"cannot use WAL for {path} (got {mode})")

    def _enable_wal(self) -> str:
        # Switching a new file to WAL needs an exclusive lock and does not wait on the busy
        # handler: several processes opening one fresh file at once must take turns.
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                (mode,) = self._connection().execute("PRAGMA journal_mode = WAL").fetchone()
                return str(mode)
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def close(self) -> None:
        with self._connections_lock:
            self._closed = True
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()

    def setup(self, ddl: Sequence[str], seed: Sequence[tuple[str, Params]] = ()) -> None:
        with self.write() as cur:
            for statement in ddl:
                cur.execute(statement)
            for sql, params in seed:
                cur.execute(sql, params)

    @contextmanager
    def read(self) -> Iterator[sqlite3.Cursor]:
        # Closing the cursor ends its statement: a half-read statement would pin this
        # connection's snapshot and make later reads on it stale.
        cur = self._connection().cursor()
        try:
            yield cur
        finally:
            cur.close()

    @contextmanager
    def write(self) -> Iterator[sqlite3.Cursor]:
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

    def stream(self, sql: str, params: Params, *, binary: bool = False) -> Iterator[Row]:
        # A connection of its own: the stream may outlive this thread's other work, and its
        # single statement reads one consistent snapshot without blocking writers (WAL).
        conn = self._connect()
        try:
            yield from conn.execute(sql, params)
        finally:
            conn.close()

    def stream_chunks(
        self, sql: str, params: Params, size: int
    ) -> Generator[list[Row], None, None]:
        # As `stream`, on a connection of its own.
        conn = self._connect()
        try:
            cur = conn.execute(sql, params)
            while chunk := cur.fetchmany(size):
                yield chunk
        finally:
            conn.close()

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: no implicit transactions; writes say BEGIN IMMEDIATE.
        conn = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        # FULL: the WAL is fsynced at every commit, so an acknowledged write survives a
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
                    raise sqlite3.ProgrammingError(f"the store at {self.path} is closed")
                self._connections.append(conn)
            self._local.conn = conn
        return conn


# PostgreSQL -----------------------------------------------------------------------------

CONNECT_TIMEOUT_S = 30.0
STREAM_CHUNK = 5000
# Serializes concurrent schema creation (two replicas starting at once).
SCHEMA_LOCK = 0x6B697A756E61  # "kizuna"

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

    @contextmanager
    def copy_in(
        self, table: str, columns: Sequence[str], types: Sequence[str]
    ) -> Iterator[psycopg.Copy]:
        """A binary `COPY table (columns) FROM STDIN`: `write_row` each row of `types`.
        Only in a `write(pipeline=False)` transaction (COPY knows no pipeline mode)."""
        statement = psycopg.sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
            psycopg.sql.Identifier(table),
            psycopg.sql.SQL(", ").join(psycopg.sql.Identifier(c) for c in columns),
        )
        with self._cursor.copy(statement) as copy:
            copy.set_types(list(types))
            yield copy


IDLE_CHECK_S = 1.0


class IdleCheck:
    """A psycopg pool `check` that pings a connection (one round trip) only when it was
    last handed out over `idle_s` ago: one broken by a database restart while idle is
    replaced, not handed out, and under load no checkout pays a round trip. One broken
    while busy fails its next statement (the pool then drops it): eventsourcing's
    recorders retry such a statement on another connection."""

    def __init__(
        self, idle_s: float = IDLE_CHECK_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._idle_s = idle_s
        self._clock = clock
        self._handed_out: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()

    def __call__(self, conn: Any) -> None:
        now = self._clock()
        last = self._handed_out.get(conn)
        if last is None or now - last > self._idle_s:
            ConnectionPool.check_connection(conn)
        self._handed_out[conn] = now


class PostgresDatabase:
    dialect = POSTGRES

    def __init__(
        self,
        url: str,
        pool_size: int,
        name: str,
        *,
        check_after_idle_s: float = 0.0,
        autocommit_reads: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Two options for a store on a hot path (both off by default):

        - `check_after_idle_s`: a connection is checked (one round trip) before it is
          handed out only if it has been idle that long; 0 checks every time. Under load
          none is then checked, and one broken by a server restart meanwhile fails the one
          call that meets it (the pool then replaces it).
        - `autocommit_reads`: each statement of `read()` is its own transaction: one round
          trip instead of BEGIN, the statement and COMMIT. Under READ COMMITTED it sees what
          it would have seen inside a transaction; only locks taken by a read (SELECT ...
          FOR UPDATE) would no longer be held until the end of `read()`.
        """
        self._autocommit_reads = autocommit_reads
        self._pool = ConnectionPool(
            url,
            min_size=pool_size,
            max_size=pool_size,
            kwargs={"autocommit": False},
            # A connection broken by a server restart is replaced, not handed out.
            check=ConnectionPool.check_connection
            if check_after_idle_s <= 0
            else IdleCheck(check_after_idle_s, clock),
            name=name,
            open=False,
        )
        self._pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)

    def close(self) -> None:
        self._pool.close()

    def setup(self, ddl: Sequence[str], seed: Sequence[tuple[str, Params]] = ()) -> None:
        with self._pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", [SCHEMA_LOCK])
            for statement in ddl:
                conn.execute(statement)
            for sql, params in seed:
                conn.execute(pyformat(sql), params)

    @contextmanager
    def read(self) -> Iterator[PgCursor]:
        with self._pool.connection() as conn:
            if not self._autocommit_reads:
                with conn.cursor() as cur:
                    yield PgCursor(cur)
                return
            conn.autocommit = True
            try:
                with conn.cursor() as cur:
                    yield PgCursor(cur)
            finally:
                # (A broken connection is left as it is: the pool discards it.)
                if conn.pgconn.transaction_status == psycopg.pq.TransactionStatus.IDLE:
                    conn.autocommit = False

    @contextmanager
    def write(self, *, pipeline: bool = True) -> Iterator[PgCursor]:
        # Pipeline outside the transaction, so COMMIT travels with the last writes; a fetch
        # (a lock, a lookup) still waits for its result. Rowcounts are not known until a
        # sync in this mode: ask with RETURNING instead. pipeline=False: for COPY.
        with self._pool.connection() as conn:
            if not pipeline:
                with conn.transaction(), conn.cursor() as cur:
                    yield PgCursor(cur)
                return
            with conn.pipeline(), conn.transaction(), conn.cursor() as cur:
                yield PgCursor(cur)

    def stream(self, sql: str, params: Params, *, binary: bool = False) -> Iterator[Row]:
        # A server-side (named) cursor: rows arrive STREAM_CHUNK at a time.
        name = f"kizuna_{uuid.uuid4().hex}"
        with self._pool.connection() as conn, conn.cursor(name, binary=binary) as cur:
            cur.itersize = STREAM_CHUNK
            cur.execute(pyformat(sql), params)
            yield from cur

    def stream_chunks(
        self, sql: str, params: Params, size: int
    ) -> Generator[list[Row], None, None]:
        # A server-side (named) cursor: one FETCH of `size` rows per chunk.
        name = f"kizuna_{uuid.uuid4().hex}"
        with self._pool.connection() as conn, conn.cursor(name) as cur:
            cur.execute(pyformat(sql), params)
            while chunk := cur.fetchmany(size):
                yield chunk
