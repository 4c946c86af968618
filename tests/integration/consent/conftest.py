"""The ledger store on both backends, with raw database access for what an operator (or an
attacker with superuser rights) could do behind the service's back."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from kizuna_consent.domain.records import ConsentRecord, Decision
from kizuna_consent.domain.statements import Version
from kizuna_consent.storage.factory import open_store
from kizuna_consent.storage.interface import Appended, LedgerStore, NewConsent, OutboxEvent

T0 = datetime(2025, 1, 1, tzinfo=UTC)
RECORDING_STARTS = T0 + timedelta(days=365)  # the store's clock starts here
STATEMENTS = ("terms", "privacy", "marketing-email")
# Errors the database raises when a trigger refuses a change.
DB_ERRORS = (sqlite3.DatabaseError, psycopg.DatabaseError)


def event_for(record: ConsentRecord) -> OutboxEvent:
    """A stand-in for the wire encoding: enough to tell which record an outbox row is for."""
    return OutboxEvent(f"consent.subject.{record.subject_id}", record.record_hash)


@dataclass
class Clock:
    """The store's clock, moved by the test."""

    now: datetime = RECORDING_STARTS

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


def consent(
    subject_id: str,
    *,
    statement_id: str = "terms",
    decision: Decision = Decision.GRANTED,
    effective_at: datetime = T0,
    version: str = "1.0",
    key: str | None = None,
    evidence: bytes = b"sealed-evidence\x00\xff",
) -> NewConsent:
    return NewConsent(
        record_id=str(uuid.uuid4()),
        subject_id=subject_id,
        statement_id=statement_id,
        version=Version.parse(version),
        decision=decision,
        effective_at=effective_at,
        channel="ec",
        site_id="shop-jp",
        evidence=evidence,
        idempotency_key=key,
    )


@dataclass
class Ledger:
    """The store under test, its clock, and a way into its database."""

    store: LedgerStore
    url: str | None
    path: Path
    clock: Clock = field(default_factory=Clock)

    @property
    def backend(self) -> str:
        return "sqlite" if self.url is None else "postgres"

    def append(self, batch: Sequence[NewConsent]) -> list[Appended]:
        return self.store.append(batch, event_for, self.clock)

    def sql(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Runs one statement on a separate connection, committed. Placeholders: `?`."""
        if self.url is None:
            conn = sqlite3.connect(self.path, isolation_level=None)
            try:
                return conn.execute(statement, params).fetchall()
            finally:
                conn.close()
        with psycopg.connect(self.url, autocommit=True) as pg:
            cur = pg.execute(statement.replace("?", "%s"), params or None)
            return cur.fetchall() if cur.description else []

    @contextmanager
    def triggers_disabled(self, table: str) -> Iterator[None]:
        """As a superuser could: SQLite drops and recreates the table's triggers,
        PostgreSQL disables and re-enables them."""
        if self.url is None:
            saved = self.sql(
                "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ?",
                [table],
            )
            assert saved, f"{table} has no triggers to disable"
            for name, _ in saved:
                self.sql(f"DROP TRIGGER {name}")
            try:
                yield
            finally:
                for _, ddl in saved:
                    self.sql(ddl)
        else:
            self.sql(f"ALTER TABLE {table} DISABLE TRIGGER ALL")
            try:
                yield
            finally:
                self.sql(f"ALTER TABLE {table} ENABLE TRIGGER ALL")


@pytest.fixture
def ledger(database_url: str | None, tmp_path: Path) -> Iterator[Ledger]:
    path = tmp_path / "consent.sqlite"
    store = open_store(database_url, path)
    try:
        yield Ledger(store, database_url, path)
    finally:
        store.close()
