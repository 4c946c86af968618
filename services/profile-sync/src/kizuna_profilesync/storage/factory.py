"""Choosing profile-sync's storage: PostgreSQL when a URL is configured, else SQLite."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from kizuna_kit.config import check_database_url
from kizuna_profilesync.storage.common import utc_now
from kizuna_profilesync.storage.interface import SyncStore
from kizuna_profilesync.storage.postgres import PostgresSyncStore
from kizuna_profilesync.storage.sqlite import SqliteSyncStore


def open_store(
    database_url: str | None,
    sqlite_path: Path,
    pool_size: int = 8,
    *,
    clock: Callable[[], datetime] = utc_now,
) -> SyncStore:
    """The store, with its schema created if missing (safe on every start, and by several
    processes at once). `clock` stamps new deliveries (due at once) and failures."""
    if database_url:
        # Refuse a malformed URL rather than silently fall back to a local file.
        check_database_url("database_url", database_url)
        return PostgresSyncStore(database_url, pool_size, clock)
    return SqliteSyncStore(sqlite_path, clock)
