"""The ledger on PostgreSQL (psycopg 3 and a connection pool), for production.

Writers are serialized by `SELECT ... FROM ledger_head WHERE id = 1 FOR UPDATE`, taken
first in every write transaction; the lock statement returns the head itself, so an
append reads the state it builds on in the same round trip. Write transactions run in
pipeline mode: everything after the last read (the batch's inserts, the head update and
COMMIT) goes to the server in one round trip. synchronous_commit is left as configured
(on by default): a commit returns once it is durable.
"""

from __future__ import annotations

from kizuna_consent.domain.state import WINNER_ORDER_SQL
from kizuna_consent.storage.common import (
    APPEND_ONLY_TABLES,
    ENTRY_COLUMNS,
    HEAD_MOVED_BACK,
    STATEMENT_IDS_CTE,
    SqlLedgerStore,
)
from kizuna_kit.sql import PostgresDatabase

TRIGGERS = [
    """CREATE OR REPLACE FUNCTION kizuna_append_only() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
            USING ERRCODE = 'restrict_violation';
    END
    $$""",
    *(
        f"""CREATE OR REPLACE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table}
        FOR EACH ROW EXECUTE FUNCTION kizuna_append_only()"""
        for table in APPEND_ONLY_TABLES
    ),
    *(
        f"""CREATE OR REPLACE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}
        FOR EACH STATEMENT EXECUTE FUNCTION kizuna_append_only()"""
        for table in (*APPEND_ONLY_TABLES, "ledger_head")
    ),
    f"""CREATE OR REPLACE FUNCTION kizuna_head_forward() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'DELETE' OR {HEAD_MOVED_BACK} THEN
            RAISE EXCEPTION 'ledger_head only moves forward: % refused', TG_OP
                USING ERRCODE = 'restrict_violation';
        END IF;
        RETURN NEW;
    END
    $$""",
    """CREATE OR REPLACE TRIGGER ledger_head_forward BEFORE UPDATE OR DELETE ON ledger_head
    FOR EACH ROW EXECUTE FUNCTION kizuna_head_forward()""",
]


class PostgresLedgerStore(SqlLedgerStore):
    _lock_clause = " FOR UPDATE"
    # One index probe per statement id (LATERAL ... LIMIT 1), however many records the
    # subject has; DISTINCT ON would read every one of them.
    _state_sql = f"""{STATEMENT_IDS_CTE}
        SELECT w.* FROM ids CROSS JOIN LATERAL (
            SELECT {ENTRY_COLUMNS} FROM timeline
            WHERE subject_id = :subject AND statement_id = ids.statement_id
              AND effective_at <= :at{{filters}}
            ORDER BY {WINNER_ORDER_SQL} LIMIT 1
        ) AS w"""  # noqa: S608
    # Reads timeline_winner in its own order: no sort, one pass over the index.
    _export_sql = f"""
        SELECT DISTINCT ON (subject_id, statement_id) {{columns}}
        FROM timeline WHERE effective_at <= :at{{filters}}
        ORDER BY subject_id, statement_id, {WINNER_ORDER_SQL}"""  # noqa: S608
    _export_distinct = True

    def __init__(self, url: str, pool_size: int = 8) -> None:
        # RecordConsent's hot path reads once per group of requests and writes once per
        # group: no extra round trips for a liveness check or BEGIN/COMMIT around reads.
        database = PostgresDatabase(
            url, pool_size, name="kizuna-consent", check_after_idle_s=1.0, autocommit_reads=True
        )
        super().__init__(database, TRIGGERS)
