"""Choosing the ledger's storage: PostgreSQL when a URL is configured, else SQLite."""

from __future__ import annotations

from pathlib import Path

from kizuna_consent.storage.interface import LedgerStore
from kizuna_consent.storage.postgres import PostgresLedgerStore
from kizuna_consent.storage.sqlite import SqliteLedgerStore
from kizuna_kit.config import check_database_url


def open_store(database_url: str | None, sqlite_path: Path, pool_size: int = 8) -> LedgerStore:
    """The store, with its schema created if missing (safe on every start, and by several
    processes at once)."""
    if database_url:
        # Refuse a malformed URL rather than silently fall back to a local file.
        check_database_url("database_url", database_url)
        return PostgresLedgerStore(database_url, pool_size)
    return SqliteLedgerStore(sqlite_path)
