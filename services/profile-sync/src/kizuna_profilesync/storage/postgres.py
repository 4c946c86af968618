"""The profile-sync store on PostgreSQL (psycopg 3 and a connection pool), for production.

Concurrent applies (the IDENTITY and the CONSENT consumer) are serialized by a
transaction-level advisory lock taken first: the next seq is read and committed under it,
so inbox seqs commit in seq order (a reader never sees seq n+1 before n) and without gaps.
The lock is released by COMMIT or ROLLBACK, never held by a broken session.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from kizuna_kit.sql import PostgresDatabase
from kizuna_profilesync.storage.common import SqlSyncStore, utc_now

APPLY_LOCK = 0x6B7A2D70732D6170  # "kz-ps-ap"


class PostgresSyncStore(SqlSyncStore):
    _serialize_sql = f"SELECT pg_advisory_xact_lock({APPLY_LOCK})"

    def __init__(
        self, url: str, pool_size: int = 8, clock: Callable[[], datetime] = utc_now
    ) -> None:
        super().__init__(PostgresDatabase(url, pool_size, name="kizuna-profilesync"), clock)
