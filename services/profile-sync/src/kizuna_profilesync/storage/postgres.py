"""The profile-sync store on PostgreSQL (psycopg 3 and a connection pool), for production.

Concurrent applies (the IDENTITY and the CONSENT consumer) are serialized by a
transaction-level advisory lock taken first: the next seq is read and committed under it,
so inbox seqs commit in seq order (a reader never sees seq n+1 before n) and without gaps.
The lock is released by COMMIT or ROLLBACK, never held by a broken session.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime

from kizuna_kit.sql import PostgresDatabase
from kizuna_profilesync.domain.profile import Profile
from kizuna_profilesync.domain.statements import Catalogue
from kizuna_profilesync.storage.common import SqlSyncStore, replace_catalogue, utc_now
from kizuna_profilesync.storage.serialization import profile_to_bytes

APPLY_LOCK = 0x6B7A2D70732D6170  # "kz-ps-ap"


class PostgresSyncStore(SqlSyncStore):
    _serialize_sql = f"SELECT pg_advisory_xact_lock({APPLY_LOCK})"

    def __init__(
        self, url: str, pool_size: int = 8, clock: Callable[[], datetime] = utc_now
    ) -> None:
        self._pg = PostgresDatabase(url, pool_size, name="kizuna-profilesync")
        super().__init__(self._pg, clock)

    def replace_profiles(
        self, profiles: Iterable[tuple[str, Profile]], catalogue: Catalogue
    ) -> int:
        """A rebuild's profiles by binary COPY into the emptied table, in one transaction."""
        rows = 0
        with self._pg.write(pipeline=False) as cur:
            self._serialize(cur)
            replace_catalogue(cur, catalogue)
            cur.execute("DELETE FROM profiles", {})
            with cur.copy_in("profiles", ("customer_id", "document"), ("text", "bytea")) as copy:
                for customer_id, profile in profiles:
                    copy.write_row((customer_id, profile_to_bytes(profile)))
                    rows += 1
        return rows
