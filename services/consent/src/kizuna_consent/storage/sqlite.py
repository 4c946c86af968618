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
    HEAD_MOVED_BACK,
    STATEMENT_IDS_CTE,
    SqlLedgerStore,
)
from kizuna_kit.sql import SqliteDatabase

# The columns a row of each append-only table is unique by.
_UNIQUE = {
    "ledger": "sequence = NEW.sequence OR record_id = NEW.record_id"
    " OR idempotency_key = NEW.idempotency_key",
    "statements": "statement_id = NEW.statement_id AND major = NEW.major AND minor = NEW.minor",
}
assert set(_UNIQUE) == set(APPEND_ONLY_TABLES)
TRIGGERS = (
    [
        f"""CREATE TRIGGER IF NOT EXISTS {table}_no_{op.lower()} BEFORE {op} ON {table}
    BEGIN SELECT RAISE(ABORT, '{table} is append-only: {op} refused'); END"""
        for table in APPEND_ONLY_TABLES
        for op in ("UPDATE", "DELETE")
    ]
    + [
        # INSERT OR REPLACE deletes the row it replaces without firing DELETE triggers
        # (unless the connection turned recursive_triggers on): an insert that meets an
        # existing row is refused before it can replace it.
        f"""CREATE TRIGGER IF NOT EXISTS {table}_no_replace BEFORE INSERT ON {table}
    WHEN EXISTS (SELECT 1 FROM {table} WHERE {unique})
    BEGIN SELECT RAISE(ABORT, '{table} is append-only: REPLACE refused'); END"""  # noqa: S608
        for table, unique in _UNIQUE.items()
    ]
    + [
        f"""CREATE TRIGGER IF NOT EXISTS ledger_head_forward BEFORE UPDATE ON ledger_head
    WHEN {HEAD_MOVED_BACK}
    BEGIN SELECT RAISE(ABORT, 'ledger_head only moves forward: UPDATE refused'); END""",
        """CREATE TRIGGER IF NOT EXISTS ledger_head_no_delete BEFORE DELETE ON ledger_head
    BEGIN SELECT RAISE(ABORT, 'ledger_head only moves forward: DELETE refused'); END""",
        """CREATE TRIGGER IF NOT EXISTS ledger_head_no_replace BEFORE INSERT ON ledger_head
    WHEN EXISTS (SELECT 1 FROM ledger_head)
    BEGIN SELECT RAISE(ABORT, 'ledger_head only moves forward: REPLACE refused'); END""",
    ]
)


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
