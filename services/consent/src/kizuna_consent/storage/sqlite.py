"""The ledger on SQLite (the default): one file, WAL, fsync on every commit.

Connections (one per thread) and transactions come from kizuna_kit.sql.SqliteDatabase:
writers are serialized by `BEGIN IMMEDIATE`, SQLite's single write lock, which also
guards against another process.
"""

from __future__ import annotations

from pathlib import Path

from kizuna_consent.domain.state import WINNER_ORDER_SQL
from kizuna_consent.storage.common import (
    APPEND_ONLY_TABLES,
    STATEMENT_IDS_CTE,
    SqlLedgerStore,
)
from kizuna_kit.sql import SqliteDatabase

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
        SELECT {{columns}} FROM timeline WHERE effective_at <= :at{{filters}}
        ORDER BY subject_id, statement_id, {WINNER_ORDER_SQL}"""  # noqa: S608

    def __init__(self, path: Path) -> None:
        super().__init__(SqliteDatabase(path), TRIGGERS)
