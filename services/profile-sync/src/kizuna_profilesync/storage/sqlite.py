"""The profile-sync store on SQLite (the default): one file, WAL, fsync on every commit.

`apply` needs no lock of its own: every write transaction starts with BEGIN IMMEDIATE,
SQLite's single write lock, so applies commit one at a time and in seq order.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from kizuna_kit.sql import SqliteDatabase
from kizuna_profilesync.storage.common import SqlSyncStore, utc_now


class SqliteSyncStore(SqlSyncStore):
    def __init__(self, path: Path, clock: Callable[[], datetime] = utc_now) -> None:
        super().__init__(SqliteDatabase(path), clock)
