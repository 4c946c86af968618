"""Login lock-out shared by every identity replica: failures are counted in the database.

Each step is one statement, atomic on its own (an upsert takes the row's lock), so
replicas counting failures for the same login id at once never lose one. Rows are keyed
by a SHA-256 digest of the login id, so no login id is stored, though the digest of a
guessed id still matches. A success deletes its row, and rows past their window are
swept every few hundred failures. Times are wall-clock milliseconds, which every replica
shares.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from pathlib import Path

from kizuna_identity.throttle import ThrottlePolicy
from kizuna_kit.sql import Database, PostgresDatabase, SqliteDatabase

SCHEMA = """CREATE TABLE IF NOT EXISTS login_lockouts (
    login_key {text} PRIMARY KEY,
    failures {int} NOT NULL,
    window_start {int} NOT NULL,
    locked_until {int} NOT NULL
)"""
LOCKED_UNTIL = "SELECT locked_until FROM login_lockouts WHERE login_key = :key"
# `fresh`: the row's window has run out, so this failure starts a new one. `count`: the
# failures in the window with this one. Reaching the limit locks, and counting restarts.
_FRESH = "login_lockouts.window_start <= :now - :window"
_COUNT = f"(CASE WHEN {_FRESH} THEN 1 ELSE login_lockouts.failures + 1 END)"
FAILED = f"""
    INSERT INTO login_lockouts (login_key, failures, window_start, locked_until)
    VALUES (:key, :first, :now, :first_lock)
    ON CONFLICT (login_key) DO UPDATE SET
        failures = CASE WHEN {_COUNT} >= :max THEN 0 ELSE {_COUNT} END,
        window_start = CASE WHEN {_FRESH} THEN :now ELSE login_lockouts.window_start END,
        locked_until = CASE WHEN {_COUNT} >= :max THEN :now + :lockout
            ELSE login_lockouts.locked_until END"""  # noqa: S608 - constant fragments
# A success forgets the failures, but never a lock another replica set meanwhile.
SUCCEEDED = "DELETE FROM login_lockouts WHERE login_key = :key AND locked_until <= :now"
FORGET_STALE = """
    DELETE FROM login_lockouts WHERE window_start <= :now - :window AND locked_until <= :now"""
DEFAULT_POLICY = ThrottlePolicy()
# Failures between sweeps of stale rows (sprayed login ids must not grow the table).
SWEEP_EVERY = 256


class SharedLoginThrottle:
    def __init__(
        self,
        db: Database,
        policy: ThrottlePolicy = DEFAULT_POLICY,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = db
        self._policy = policy
        self._clock = clock
        self._until_sweep = SWEEP_EVERY
        dialect = db.dialect
        db.setup([SCHEMA.format(text=dialect.text, int=dialect.integer)])

    def retry_after(self, login_id: str) -> int:
        """Seconds until the login may be tried again; 0 when it is not locked."""
        with self._db.read() as cur:
            cur.execute(LOCKED_UNTIL, {"key": _key(login_id)})
            row = cur.fetchone()
        remaining_ms = 0 if row is None else int(row[0]) - self._now()
        return max(1, math.ceil(remaining_ms / 1000)) if remaining_ms > 0 else 0

    def failed(self, login_id: str) -> None:
        policy, now = self._policy, self._now()
        lockout = _ms(policy.lockout_seconds)
        params = {
            "key": _key(login_id),
            "now": now,
            "window": _ms(policy.window_seconds),
            "lockout": lockout,
            "max": policy.max_failures,
            # A first failure that already reaches the limit (max_failures 1) locks too.
            "first": 0 if policy.max_failures <= 1 else 1,
            "first_lock": now + lockout if policy.max_failures <= 1 else 0,
        }
        with self._db.write() as cur:
            cur.execute(FAILED, params)
        self._until_sweep -= 1
        if self._until_sweep <= 0:
            self._until_sweep = SWEEP_EVERY
            with self._db.write() as cur:
                cur.execute(FORGET_STALE, {"now": now, "window": params["window"]})

    def succeeded(self, login_id: str) -> None:
        with self._db.write() as cur:
            cur.execute(SUCCEEDED, {"key": _key(login_id), "now": self._now()})

    def close(self) -> None:
        self._db.close()

    def _now(self) -> int:
        return _ms(self._clock())


def open_lockouts(
    database_url: str | None,
    sqlite_path: Path,
    policy: ThrottlePolicy = DEFAULT_POLICY,
    *,
    clock: Callable[[], float] = time.time,
) -> SharedLoginThrottle:
    """In the identity database on PostgreSQL; in a file of its own next to the event
    store's on SQLite (two libraries writing one SQLite file would wait on each other)."""
    if database_url:
        db: Database = PostgresDatabase(
            database_url,
            2,
            "kizuna-identity-lockouts",
            check_after_idle_s=1.0,
            autocommit_reads=True,
        )
    else:
        db = SqliteDatabase(sqlite_path)
    return SharedLoginThrottle(db, policy, clock=clock)


def _key(login_id: str) -> str:
    return hashlib.sha256(login_id.encode()).hexdigest()


def _ms(seconds: float) -> int:
    return int(seconds * 1000)
