"""What the SQLite and PostgreSQL ledger stores share: the schema, the SQL both dialects
accept, the mapping between rows and domain values, and every algorithm (append, merges,
erasures, timeline rebuild).

`SqlLedgerStore` implements `LedgerStore` over a `Database` (kizuna_kit.sql: connections,
transactions, streaming). A backend supplies only its database, the append-only
triggers, and the two read queries where the dialects differ (state, export). SQL here
uses `:name` parameters; the PostgreSQL database translates them.

Instants are stored as the domain's canonical text (fixed width, UTC, microseconds): they
sort as text, and they round-trip byte for byte into the record hash. Hashes are blobs.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

from eventsourcing.persistence import Notification

from kizuna_consent.domain.chain import record_leaf
from kizuna_consent.domain.errors import ConsentError
from kizuna_consent.domain.instants import canonical_instant, parse_instant, to_utc
from kizuna_consent.domain.merkle import HASH_SIZE, CompactRange, leaf_hash
from kizuna_consent.domain.records import (
    GENESIS_HASH,
    ChainHead,
    ConsentRecord,
    Decision,
    next_record,
)
from kizuna_consent.domain.state import ConsentStatus, Entry
from kizuna_consent.domain.statements import Statement, StatementVersionExists, Version
from kizuna_consent.storage.interface import (
    Appended,
    NewConsent,
    OutboxEvent,
    SubjectErased,
    SubjectKey,
    TreeState,
)
from kizuna_kit.sql import Cursor, Database, Dialect, Params, Row, in_list, insert, select

KEY_SIZE = 32
ERASED = "the subject was erased; no consent can be recorded"


# Schema ------------------------------------------------------------------------------


_TABLES = [
    """CREATE TABLE IF NOT EXISTS statements (
        statement_id {text} NOT NULL,
        major {int} NOT NULL,
        minor {int} NOT NULL,
        purpose {text} NOT NULL,
        title {text} NOT NULL,
        body {text} NOT NULL,
        text_sha256 {text} NOT NULL,
        published_at {text} NOT NULL,
        PRIMARY KEY (statement_id, major, minor)
    )""",
    # Exactly the hashed fields, as hashed (version "MAJOR.MINOR", canonical instants).
    """CREATE TABLE IF NOT EXISTS ledger (
        sequence {int} PRIMARY KEY,
        record_id {text} NOT NULL UNIQUE,
        subject_id {text} NOT NULL,
        statement_id {text} NOT NULL,
        version {text} NOT NULL,
        decision {text} NOT NULL,
        effective_at {text} NOT NULL,
        recorded_at {text} NOT NULL,
        channel {text} NOT NULL,
        site_id {text} NOT NULL,
        evidence {blob} NOT NULL,
        idempotency_key {text} UNIQUE,
        prev_hash {blob} NOT NULL,
        record_hash {blob} NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS ledger_by_subject ON ledger (subject_id, sequence)",
    # The one row every writer locks: chain head, Merkle peaks (concatenated 32-byte
    # hashes, largest subtree first), the last recorded_at and the last outbox position,
    # so that an append reads all it needs in the statement that takes the lock.
    """CREATE TABLE IF NOT EXISTS ledger_head (
        id {int} PRIMARY KEY CHECK (id = 1),
        sequence {int} NOT NULL,
        record_hash {blob} NOT NULL,
        tree_size {int} NOT NULL,
        peaks {blob} NOT NULL,
        recorded_at {text},
        outbox_position {int} NOT NULL
    )""",
    # Derived from ledger + aliases; subject_id is the record's *current* canonical id.
    """CREATE TABLE IF NOT EXISTS timeline (
        sequence {int} PRIMARY KEY,
        subject_id {text} NOT NULL,
        statement_id {text} NOT NULL,
        effective_at {text} NOT NULL,
        recorded_at {text} NOT NULL,
        decision {text} NOT NULL,
        version {text} NOT NULL,
        record_id {text} NOT NULL
    )""",
    # In the winner's order (domain WINNER_ORDER_SQL), so a point-in-time lookup is one
    # short index range scan per statement and an export reads it in order, unsorted.
    """CREATE INDEX IF NOT EXISTS timeline_winner ON timeline
        (subject_id, statement_id, effective_at DESC, recorded_at DESC, sequence DESC)""",
    # survivor_id is the fact reported; canonical_id the live end of the chain, kept current
    # on every merge so that resolving an id is one lookup however long the chain.
    """CREATE TABLE IF NOT EXISTS subject_aliases (
        merged_id {text} PRIMARY KEY,
        survivor_id {text} NOT NULL,
        canonical_id {text} NOT NULL,
        position {int} NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS subject_aliases_canonical ON subject_aliases (canonical_id)",
    """CREATE TABLE IF NOT EXISTS erased_subjects (
        subject_id {text} PRIMARY KEY,
        position {int} NOT NULL
    )""",
    # A NULL key is a shredded one: the row stays so a late "create" cannot revive it.
    """CREATE TABLE IF NOT EXISTS subject_keys (
        subject_id {text} PRIMARY KEY,
        evidence_key {blob}
    )""",
    """CREATE TABLE IF NOT EXISTS tracking (
        id {int} PRIMARY KEY CHECK (id = 1),
        position {int} NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS outbox (
        position {int} PRIMARY KEY,
        topic {text} NOT NULL,
        originator_id {text} NOT NULL,
        originator_version {int} NOT NULL,
        envelope {blob} NOT NULL
    )""",
]

SEED: list[tuple[str, Params]] = [
    (
        # Not ON CONFLICT: SQLite's guard against a replaced head refuses any insert that
        # meets the row, before a conflict clause could skip it.
        "INSERT INTO ledger_head (id, sequence, record_hash, tree_size, peaks, outbox_position)"
        " SELECT 1, 0, :genesis, 0, :no_peaks, 0"
        " WHERE NOT EXISTS (SELECT 1 FROM ledger_head WHERE id = 1)",
        {"genesis": GENESIS_HASH, "no_peaks": b""},
    ),
    ("INSERT INTO tracking (id, position) VALUES (1, 0) ON CONFLICT (id) DO NOTHING", {}),
]

APPEND_ONLY_TABLES = ("ledger", "statements")
# The head only moves forward: moved back (or its hashes changed in place), it would
# describe a shorter ledger, and VerifyLedger would check the records against that.
HEAD_MOVED_BACK = """NEW.sequence < OLD.sequence OR NEW.tree_size < OLD.tree_size
    OR NEW.outbox_position < OLD.outbox_position
    OR (NEW.sequence = OLD.sequence
        AND (NEW.record_hash <> OLD.record_hash OR NEW.peaks <> OLD.peaks))"""


def schema(dialect: Dialect) -> list[str]:
    """CREATE ... IF NOT EXISTS statements for every table and index, in this dialect."""
    return [
        ddl.format(int=dialect.integer, text=dialect.text, blob=dialect.blob) for ddl in _TABLES
    ]


# SQL both dialects accept ------------------------------------------------------------------

RECORD_COLUMNS = (
    "sequence, record_id, subject_id, statement_id, version, decision, effective_at, "
    "recorded_at, channel, site_id, evidence, idempotency_key, prev_hash, record_hash"
)
# What `entry_from_row` reads, in this order.
ENTRY_COLUMNS = "statement_id, decision, version, effective_at, recorded_at, record_id, sequence"
# What `export_rows` returns, in this order.
EXPORT_COLUMNS = "subject_id, statement_id, decision, version, effective_at"
STATEMENT_COLUMNS = "statement_id, major, minor, purpose, title, body, text_sha256, published_at"


INSERT_RECORD = insert("ledger", RECORD_COLUMNS)
INSERT_STATEMENT = insert("statements", STATEMENT_COLUMNS)
INSERT_OUTBOX = (
    "INSERT INTO outbox (position, topic, originator_id, originator_version, envelope)"
    " VALUES (:position, :topic, :originator_id, :originator_version, :envelope)"
)
HEAD_COLUMNS = "sequence, record_hash, tree_size, peaks, recorded_at, outbox_position"
HEAD = f"SELECT {HEAD_COLUMNS} FROM ledger_head WHERE id = 1"  # noqa: S608
UPDATE_HEAD = (
    "UPDATE ledger_head SET sequence = :sequence, record_hash = :record_hash,"
    " tree_size = :tree_size, peaks = :peaks, recorded_at = :recorded_at,"
    " outbox_position = :outbox_position WHERE id = 1"
)
# The timeline is one SQL definition over the ledger, used live (after an append) and by
# a rebuild, so the two cannot drift apart.
DERIVE_TIMELINE = """
    INSERT INTO timeline (sequence, subject_id, statement_id, effective_at, recorded_at,
                          decision, version, record_id)
    SELECT l.sequence, COALESCE(a.canonical_id, l.subject_id), l.statement_id,
           l.effective_at, l.recorded_at, l.decision, l.version, l.record_id
    FROM ledger AS l LEFT JOIN subject_aliases AS a ON a.merged_id = l.subject_id
    WHERE l.sequence > :after"""
# The first sequence at which the timeline is not what DERIVE_TIMELINE makes of the
# ledger (a row changed, missing or extra); NULL when it is.
_DERIVED = """
    SELECT l.sequence, COALESCE(a.canonical_id, l.subject_id), l.statement_id,
           l.effective_at, l.recorded_at, l.decision, l.version, l.record_id
    FROM ledger AS l LEFT JOIN subject_aliases AS a ON a.merged_id = l.subject_id"""
_STORED = """
    SELECT sequence, subject_id, statement_id, effective_at, recorded_at, decision, version,
           record_id FROM timeline"""
FIRST_TIMELINE_MISMATCH = f"""
    SELECT min(sequence) FROM (
        SELECT sequence FROM ({_DERIVED} EXCEPT {_STORED}) AS missing
        UNION ALL
        SELECT sequence FROM ({_STORED} EXCEPT {_DERIVED}) AS extra
    ) AS differences"""  # noqa: S608 - constants only
# The distinct statement ids of one subject by an index skip scan (one probe per id),
# shared by both state queries.
STATEMENT_IDS_CTE = """
    WITH RECURSIVE ids(statement_id) AS (
        SELECT min(statement_id) FROM timeline WHERE subject_id = :subject
        UNION ALL
        SELECT (SELECT min(statement_id) FROM timeline
                WHERE subject_id = :subject AND statement_id > ids.statement_id)
        FROM ids WHERE ids.statement_id IS NOT NULL
    )"""


# Rows <-> domain ----------------------------------------------------------------------

# A field that no longer parses (a tampered row) reads as this naive time, which
# `verify_chain` reports as an unreadable record at that sequence instead of crashing.
UNREADABLE = datetime.min
_STATUS = {"GRANTED": ConsentStatus.GRANTED, "WITHDRAWN": ConsentStatus.WITHDRAWN}


@functools.lru_cache(maxsize=4096)
def read_version(text: str) -> Version:
    # Few distinct versions exist; caching keeps exports from re-parsing them per row.
    return Version.parse(text)


def record_params(record: ConsentRecord) -> dict[str, Any]:
    return {
        "sequence": record.sequence,
        "record_id": record.record_id,
        "subject_id": record.subject_id,
        "statement_id": record.statement_id,
        "version": str(record.version),
        "decision": str(record.decision),
        "effective_at": canonical_instant(record.effective_at),
        "recorded_at": canonical_instant(record.recorded_at),
        "channel": record.channel,
        "site_id": record.site_id,
        "evidence": record.evidence,
        "idempotency_key": record.idempotency_key,
        "prev_hash": record.prev_hash,
        "record_hash": record.record_hash,
    }


def record_from_row(row: Row) -> ConsentRecord:
    """A ledger row (RECORD_COLUMNS) as stored, unchecked: `verify_chain` judges it."""
    (seq, record_id, subject, statement, version, decision, effective, recorded) = row[:8]
    channel, site_id, evidence, key, prev_hash, record_hash = row[8:]
    try:
        return ConsentRecord(
            sequence=seq,
            record_id=_text(record_id),
            subject_id=_text(subject),
            statement_id=_text(statement),
            version=read_version(_text(version)),
            decision=Decision(decision),
            effective_at=parse_instant(_text(effective), "effective_at"),
            recorded_at=parse_instant(_text(recorded), "recorded_at"),
            channel=_text(channel),
            site_id=_text(site_id),
            evidence=_blob(evidence),
            idempotency_key=None if key is None else _text(key),
            prev_hash=_blob(prev_hash),
            record_hash=_blob(record_hash),
        )
    except (ConsentError, ValueError, TypeError):
        return ConsentRecord(
            sequence=seq,
            record_id=str(record_id),
            subject_id=str(subject),
            statement_id=str(statement),
            version=Version(0, 0),
            decision=Decision.GRANTED,
            effective_at=UNREADABLE,
            recorded_at=UNREADABLE,
            channel=str(channel),
            site_id=str(site_id),
            evidence=b"",
            idempotency_key=None if key is None else str(key),
            prev_hash=prev_hash if isinstance(prev_hash, bytes) else b"",
            record_hash=record_hash if isinstance(record_hash, bytes) else b"",
        )


def entry_from_row(row: Row) -> Entry:
    """A timeline row (ENTRY_COLUMNS) as the state of its statement."""
    _, decision, version, effective_at, recorded_at, record_id, sequence = row
    status = _STATUS.get(decision)
    if status is None:
        raise ValueError(f"timeline row {sequence} has an unknown decision; rebuild it")
    return Entry(
        status=status,
        version=read_version(version),
        effective_at=derived_instant(effective_at),
        recorded_at=derived_instant(recorded_at),
        record_id=record_id,
        sequence=sequence,
    )


def derived_instant(text: str) -> datetime:
    """An instant of the timeline: a copy of canonical ledger text, not evidence, so the C
    parser may read it (some 20 times faster than the strict one, which ledger rows keep,
    and the same value). Exports read millions of these."""
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        return parse_instant(text)  # raises the domain's error
    return value.astimezone(UTC)


def statement_params(statement: Statement) -> dict[str, Any]:
    return {
        "statement_id": statement.statement_id,
        "major": statement.version.major,
        "minor": statement.version.minor,
        "purpose": statement.purpose,
        "title": statement.title,
        "body": statement.text,
        "text_sha256": statement.text_sha256,
        "published_at": canonical_instant(statement.published_at),
    }


def statement_from_row(row: Row) -> Statement:
    statement_id, major, minor, purpose, title, body, text_sha256, published_at = row
    return Statement(
        statement_id=statement_id,
        version=Version(major, minor),
        purpose=purpose,
        title=title,
        text=body,
        text_sha256=text_sha256,
        published_at=parse_instant(published_at, "published_at"),
    )


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError("not text")
    return value


def _blob(value: object) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError("not bytes")
    return bytes(value)


# Appending (pure: no I/O) ---------------------------------------------------------------


@dataclass(frozen=True)
class Head:
    """The locked ledger_head row."""

    chain: ChainHead
    tree: CompactRange
    recorded_at: datetime | None
    outbox_position: int

    @classmethod
    def from_row(cls, row: Row) -> Head:
        sequence, record_hash, tree_size, peaks, recorded_at, outbox_position = row
        blob = _blob(peaks)
        split = [blob[i : i + HASH_SIZE] for i in range(0, len(blob), HASH_SIZE)]
        return cls(
            chain=ChainHead(sequence, _blob(record_hash)),
            tree=CompactRange(tree_size, split),
            recorded_at=None if recorded_at is None else parse_instant(recorded_at),
            outbox_position=outbox_position,
        )


@dataclass(frozen=True)
class AppendPlan:
    results: list[Appended]
    created: list[ConsentRecord]
    tree: CompactRange


def plan_append(
    head: Head,
    batch: Sequence[NewConsent],
    stored: Mapping[str, ConsentRecord],
    recorded_at: datetime,
) -> AppendPlan:
    """The records a batch appends after `head`, and each caller's answer. `stored` maps the
    batch's idempotency keys already in the ledger to their records; a key repeated within
    the batch answers with the batch's first record for it."""
    tree = CompactRange(head.tree.size, head.tree.peaks)
    prev = head.chain
    firsts = dict(stored)
    results: list[Appended] = []
    created: list[ConsentRecord] = []
    for item in batch:
        first = firsts.get(item.idempotency_key) if item.idempotency_key else None
        if first is not None:
            results.append(Appended(first, created=False))
            continue
        record = next_record(
            prev,
            record_id=item.record_id,
            subject_id=item.subject_id,
            statement_id=item.statement_id,
            version=item.version,
            decision=item.decision,
            effective_at=item.effective_at or recorded_at,
            recorded_at=recorded_at,
            channel=item.channel,
            site_id=item.site_id,
            evidence=item.evidence,
            idempotency_key=item.idempotency_key,
        )
        tree.append(record_leaf(record))
        prev = record.head
        created.append(record)
        results.append(Appended(record, created=True))
        if record.idempotency_key is not None:
            firsts[record.idempotency_key] = record
    return AppendPlan(results, created, tree)


# The store --------------------------------------------------------------------------------


class SqlLedgerStore:
    """`LedgerStore` over SQL; see the module docstring for what a backend adds."""

    # Appended to HEAD when taking the writers' lock (PostgreSQL: " FOR UPDATE"; SQLite
    # needs none: BEGIN IMMEDIATE already holds the database's single write lock).
    _lock_clause: ClassVar[str] = ""
    # Winner per statement of one subject; `{filters}` takes the optional as_known_at clause.
    _state_sql: ClassVar[str]
    # `{columns}` of all subjects ordered by subject, statement, then winner first; same
    # `{filters}`. Only the first row of each pair is used: `_export_distinct` says whether
    # the query already returns no other.
    _export_sql: ClassVar[str]
    _export_distinct: ClassVar[bool] = False

    def __init__(self, db: Database, triggers: Sequence[str]) -> None:
        """Opens the store on `db`, creating the schema, `triggers` and seed rows if
        missing (safe on every start); closes `db` if that fails."""
        self._db = db
        try:
            db.setup([*schema(db.dialect), *triggers], SEED)
        except BaseException:
            db.close()
            raise
        self._read = db.read
        self._write = db.write
        self._stream = db.stream

    def close(self) -> None:
        self._db.close()

    # Statements -------------------------------------------------------------------------

    def publish_statement(self, statement: Statement, event: OutboxEvent) -> None:
        with self._write() as cur:
            head = self._lock_head(cur)  # outbox positions must commit in order
            cur.execute(
                "SELECT 1 FROM statements"
                " WHERE statement_id = :statement_id AND major = :major AND minor = :minor",
                statement_params(statement),
            )
            if cur.fetchone() is not None:
                raise StatementVersionExists(statement.statement_id, statement.version)
            cur.execute(INSERT_STATEMENT, statement_params(statement))
            position = head.outbox_position + 1
            cur.execute(INSERT_OUTBOX, _outbox_params(position, event, statement.statement_id, 0))
            cur.execute(
                "UPDATE ledger_head SET outbox_position = :position WHERE id = 1",
                {"position": position},
            )

    def get_statement(self, statement_id: str, version: Version | None = None) -> Statement | None:
        sql = select(STATEMENT_COLUMNS, "statements", "WHERE statement_id = :statement_id")
        params: dict[str, Any] = {"statement_id": statement_id}
        if version is None:
            sql += " ORDER BY major DESC, minor DESC LIMIT 1"
        else:
            sql += " AND major = :major AND minor = :minor"
            params |= {"major": version.major, "minor": version.minor}
        with self._read() as cur:
            cur.execute(sql, params)
            row = cur.fetchone()
        return None if row is None else statement_from_row(row)

    def list_statements(self, statement_id: str | None = None) -> list[Statement]:
        where = "" if statement_id is None else "WHERE statement_id = :statement_id "
        sql = select(STATEMENT_COLUMNS, "statements", where + "ORDER BY statement_id, major, minor")
        with self._read() as cur:
            cur.execute(sql, {"statement_id": statement_id})
            return [statement_from_row(row) for row in cur.fetchall()]

    def latest_majors(self) -> dict[str, int]:
        with self._read() as cur:
            cur.execute("SELECT statement_id, max(major) FROM statements GROUP BY statement_id")
            return {statement_id: major for statement_id, major in cur.fetchall()}

    # Appends ----------------------------------------------------------------------------

    def append(
        self,
        batch: Sequence[NewConsent],
        event_for: Callable[[ConsentRecord], OutboxEvent],
        now: Callable[[], datetime],
    ) -> list[Appended]:
        if not batch:
            return []
        keys = sorted({item.idempotency_key for item in batch if item.idempotency_key})
        with self._write() as cur:
            head = self._lock_head(cur)
            # Checked again under the lock, in a statement of its own (so that its snapshot
            # is taken once the lock is held): an erasure may have landed since `prepare`.
            self._refuse_erased(cur, sorted({item.subject_id for item in batch}))
            stored = self._records_by_keys(cur, keys)
            recorded_at = self._recorded_at(head, now)
            plan = plan_append(head, batch, stored, recorded_at)
            if plan.created:
                self._write_appended(cur, head, plan, event_for)
        return plan.results

    @staticmethod
    def _recorded_at(head: Head, now: Callable[[], datetime]) -> datetime:
        # Read under the lock, and never behind the last record: recorded_at must not
        # decrease along the ledger even if the clock steps back.
        recorded_at = to_utc(now(), "recorded_at")
        if head.recorded_at is not None and recorded_at < head.recorded_at:
            recorded_at = head.recorded_at
        return recorded_at

    def _write_appended(
        self,
        cur: Cursor,
        head: Head,
        plan: AppendPlan,
        event_for: Callable[[ConsentRecord], OutboxEvent],
    ) -> None:
        # Four statements for the whole batch, whatever its size.
        cur.executemany(INSERT_RECORD, [record_params(r) for r in plan.created])
        cur.execute(DERIVE_TIMELINE, {"after": head.chain.sequence})
        cur.executemany(
            INSERT_OUTBOX,
            [
                _outbox_params(head.outbox_position + i, event_for(r), r.subject_id, r.sequence)
                for i, r in enumerate(plan.created, start=1)
            ],
        )
        last = plan.created[-1]
        cur.execute(
            UPDATE_HEAD,
            {
                "sequence": last.sequence,
                "record_hash": last.record_hash,
                "tree_size": plan.tree.size,
                "peaks": b"".join(plan.tree.peaks),
                "recorded_at": canonical_instant(last.recorded_at),
                "outbox_position": head.outbox_position + len(plan.created),
            },
        )

    @staticmethod
    def _refuse_erased(cur: Cursor, subjects: Sequence[str]) -> None:
        names, params = in_list("s", subjects)
        cur.execute(f"SELECT 1 FROM erased_subjects WHERE subject_id IN {names}", params)  # noqa: S608
        if cur.fetchone() is not None:
            raise SubjectErased(ERASED)

    def append_resolving(
        self,
        subject_ids: Sequence[str],
        build: Callable[[int, SubjectKey], NewConsent],
        event_for: Callable[[ConsentRecord], OutboxEvent],
        now: Callable[[], datetime],
    ) -> list[Appended | SubjectErased]:
        if not subject_ids:
            return []
        with self._write() as cur:
            head = self._lock_head(cur)
            # Read after the lock is held (erasures and merges take it too): nothing can
            # change about these subjects until this transaction ends.
            subjects = self._resolve(cur, subject_ids)
            answers: list[Appended | SubjectErased | None] = []
            batch = []
            for i, subject in enumerate(subjects):
                if subject.erased or subject.key is None:
                    answers.append(SubjectErased(ERASED))
                else:
                    batch.append(build(i, subject))
                    answers.append(None)
            keys = sorted({item.idempotency_key for item in batch if item.idempotency_key})
            stored = self._records_by_keys(cur, keys)
            recorded_at = self._recorded_at(head, now)
            plan = plan_append(head, batch, stored, recorded_at)
            if plan.created:
                self._write_appended(cur, head, plan, event_for)
        appended = iter(plan.results)
        return [next(appended) if answer is None else answer for answer in answers]

    def find_by_idempotency_key(self, key: str) -> ConsentRecord | None:
        return self._one_record("idempotency_key = :key", {"key": key})

    def find_record(self, record_id: str) -> ConsentRecord | None:
        return self._one_record("record_id = :record_id", {"record_id": record_id})

    # Reads ------------------------------------------------------------------------------

    def state(
        self, subject_id: str, at: datetime, as_known_at: datetime | None
    ) -> dict[str, Entry]:
        params = {"subject": subject_id, "at": canonical_instant(at, "at")}
        filters = _visibility(params, as_known_at, None)
        with self._read() as cur:
            cur.execute(self._state_sql.format(filters=filters), params)
            return {row[0]: entry_from_row(row) for row in cur.fetchall()}

    def export_state(
        self, at: datetime, as_known_at: datetime | None, statement_id: str | None
    ) -> Iterator[tuple[str, str, Entry]]:
        columns = f"subject_id, {ENTRY_COLUMNS}"
        for chunk in self._export_chunks(columns, at, as_known_at, statement_id, 1000):
            for row in chunk:
                yield row[0], row[1], entry_from_row(row[1:])

    def export_rows(
        self, at: datetime, as_known_at: datetime | None, statement_id: str | None, size: int
    ) -> Iterator[list[Row]]:
        return self._export_chunks(EXPORT_COLUMNS, at, as_known_at, statement_id, size)

    def _export_chunks(
        self,
        columns: str,
        at: datetime,
        as_known_at: datetime | None,
        statement_id: str | None,
        size: int,
    ) -> Iterator[list[Row]]:
        """The winner rows (`columns`, starting with subject_id, statement_id), in lists of
        up to `size`, never an empty one."""
        params = {"at": canonical_instant(at, "at")}
        filters = _visibility(params, as_known_at, statement_id)
        sql = self._export_sql.format(columns=columns, filters=filters)
        chunks = self._db.stream_chunks(sql, params, size)
        if self._export_distinct:
            yield from chunks
            return
        subject = statement = None
        for chunk in chunks:
            # Rows come in winner order within each (subject, statement): keep the first.
            kept = []
            for row in chunk:
                if row[1] != statement or row[0] != subject:
                    subject, statement = row[0], row[1]
                    kept.append(row)
            if kept:
                yield kept

    def history(self, subject_ids: Sequence[str]) -> Iterator[ConsentRecord]:
        if not subject_ids:
            return
        ids, params = in_list("s", subject_ids)
        sql = select(RECORD_COLUMNS, "ledger", f"WHERE subject_id IN {ids} ORDER BY sequence")
        for row in self._stream(sql, params):
            yield record_from_row(row)

    def records(self, start_sequence: int = 1) -> Iterator[ConsentRecord]:
        sql = select(RECORD_COLUMNS, "ledger", "WHERE sequence >= :start ORDER BY sequence")
        for row in self._stream(sql, {"start": start_sequence}):
            yield record_from_row(row)

    def tree(self) -> TreeState:
        with self._read() as cur:
            cur.execute(HEAD, {})
            head = Head.from_row(cur.fetchone())
        return TreeState(head.tree.size, head.tree.root())

    def leaf_hashes(self, size: int) -> Sequence[bytes]:
        sql = "SELECT record_hash FROM ledger WHERE sequence <= :size ORDER BY sequence"
        return [record_leaf_of(row[0]) for row in self._stream(sql, {"size": size})]

    # Subjects and identity events --------------------------------------------------------

    def canonical_subject(self, subject_id: str) -> str:
        with self._read() as cur:
            return self._canonical(cur, subject_id)

    def merged_ids(self, canonical_id: str) -> list[str]:
        with self._read() as cur:
            cur.execute(
                "SELECT merged_id FROM subject_aliases WHERE canonical_id = :id ORDER BY merged_id",
                {"id": canonical_id},
            )
            return [row[0] for row in cur.fetchall()]

    def is_erased(self, subject_id: str) -> bool:
        with self._read() as cur:
            cur.execute("SELECT 1 FROM erased_subjects WHERE subject_id = :id", {"id": subject_id})
            return cur.fetchone() is not None

    def subject_key(self, subject_id: str, create: bool) -> bytes | None:
        select = "SELECT evidence_key FROM subject_keys WHERE subject_id = :id"
        with self._read() as cur:
            cur.execute(select, {"id": subject_id})
            row = cur.fetchone()
        if row is not None or not create:
            return None if row is None or row[0] is None else bytes(row[0])
        with self._write() as cur:
            # Racing an erasure is safe: both write this one row, and a shredded (NULL) key
            # is never overwritten, so whichever commits first, the key ends up destroyed.
            cur.execute(
                "INSERT INTO subject_keys (subject_id, evidence_key) VALUES (:id, :key)"
                " ON CONFLICT (subject_id) DO NOTHING",
                {"id": subject_id, "key": secrets.token_bytes(KEY_SIZE)},
            )
            cur.execute(select, {"id": subject_id})
            row = cur.fetchone()
        return None if row is None or row[0] is None else bytes(row[0])

    def _resolve(self, cur: Cursor, subject_ids: Sequence[str]) -> list[SubjectKey]:
        """For each id, in order: its canonical subject, whether that is erased, and its
        key (made where missing, none for an erased subject). Only under the writers'
        lock: merges and erasures take it too, so nothing read here changes meanwhile."""
        found = self._subject_facts(cur, sorted(set(subject_ids)))
        # A merged id's survivor needs its own facts (the canonical id is the live end of
        # the chain: one more round at most).
        survivors = sorted({f.canonical for f in found.values()} - found.keys())
        if survivors:
            found |= self._subject_facts(cur, survivors)
        missing = sorted(
            {f.canonical for f in found.values()}
            - {c for c, f in found.items() if f.erased or f.has_key}
        )
        if missing:
            # ON CONFLICT: `subject_key(create=True)` does not take the lock.
            cur.executemany(
                "INSERT INTO subject_keys (subject_id, evidence_key) VALUES (:id, :key)"
                " ON CONFLICT (subject_id) DO NOTHING",
                [{"id": i, "key": secrets.token_bytes(KEY_SIZE)} for i in missing],
            )
            found |= self._subject_facts(cur, missing)
        answers = []
        for subject_id in subject_ids:
            canonical = found[subject_id].canonical
            facts = found[canonical]
            answers.append(SubjectKey(canonical, facts.erased, facts.key))
        return answers

    def _subject_facts(self, cur: Cursor, ids: Sequence[str]) -> dict[str, _SubjectFacts]:
        """Alias, erasure and key of each id, in one statement."""
        names, params = in_list("s", ids)
        cur.execute(
            # The key branch first: PostgreSQL types a bare NULL column from the left.
            f"SELECT 'k', subject_id, NULL, evidence_key FROM subject_keys"  # noqa: S608
            f" WHERE subject_id IN {names}"
            f" UNION ALL SELECT 'a', merged_id, canonical_id, NULL FROM subject_aliases"
            f" WHERE merged_id IN {names}"
            f" UNION ALL SELECT 'e', subject_id, NULL, NULL FROM erased_subjects"
            f" WHERE subject_id IN {names}",
            params,
        )
        canonical: dict[str, str] = {}
        erased: set[str] = set()
        keys: dict[str, bytes | None] = {}
        for kind, subject_id, alias, key in cur.fetchall():
            if kind == "a":
                canonical[subject_id] = alias
            elif kind == "e":
                erased.add(subject_id)
            else:
                keys[subject_id] = None if key is None else bytes(key)
        return {
            i: _SubjectFacts(canonical.get(i, i), i in erased, i in keys, keys.get(i)) for i in ids
        }

    def apply_merge(self, merged_id: str, survivor_id: str, position: int) -> bool:
        with self._write() as cur:
            # The writers' lock: an append in flight cannot leave a row under the merged id.
            self._lock_head(cur)
            if not self._advance_tracking(cur, position):
                return False
            target = self._canonical(cur, survivor_id)
            already = self._canonical(cur, merged_id) != merged_id
            if target == merged_id or already:
                return True  # a cycle or a repeated merge: tracked, nothing to change
            ids = {"merged": merged_id, "survivor": survivor_id, "target": target}
            cur.execute(
                "INSERT INTO subject_aliases (merged_id, survivor_id, canonical_id, position)"
                " VALUES (:merged, :survivor, :target, :position)",
                ids | {"position": position},
            )
            cur.execute(
                "UPDATE subject_aliases SET canonical_id = :target WHERE canonical_id = :merged",
                ids,
            )
            cur.execute("UPDATE timeline SET subject_id = :target WHERE subject_id = :merged", ids)
            return True

    def apply_erasure(self, subject_id: str, position: int) -> bool:
        with self._write() as cur:
            self._lock_head(cur)
            if not self._advance_tracking(cur, position):
                return False
            params = {"id": subject_id, "position": position}
            cur.execute(
                "INSERT INTO erased_subjects (subject_id, position) VALUES (:id, :position)"
                " ON CONFLICT (subject_id) DO NOTHING",
                params,
            )
            # Crypto-shredding: the subject's key and the keys of ids merged into it become
            # NULL (a row is kept so a later create cannot bring a key back).
            cur.execute(
                "INSERT INTO subject_keys (subject_id, evidence_key) VALUES (:id, NULL)"
                " ON CONFLICT (subject_id) DO UPDATE SET evidence_key = NULL",
                params,
            )
            cur.execute(
                "INSERT INTO subject_keys (subject_id, evidence_key)"
                " SELECT merged_id, NULL FROM subject_aliases WHERE canonical_id = :id"
                " ON CONFLICT (subject_id) DO UPDATE SET evidence_key = NULL",
                params,
            )
            return True

    def tracked_position(self) -> int:
        with self._read() as cur:
            cur.execute("SELECT position FROM tracking WHERE id = 1", {})
            return int(cur.fetchone()[0])

    # Timeline maintenance ----------------------------------------------------------------

    def rebuild_timeline(self) -> None:
        with self._write() as cur:
            self._lock_head(cur)
            cur.execute("DELETE FROM timeline", {})
            cur.execute(DERIVE_TIMELINE, {"after": 0})

    def first_timeline_mismatch(self) -> int | None:
        with self._read() as cur:
            cur.execute(FIRST_TIMELINE_MISMATCH, {})
            found = cur.fetchone()[0]
        return None if found is None else int(found)

    def timeline_rows(self) -> list[tuple[object, ...]]:
        with self._read() as cur:
            cur.execute(
                "SELECT sequence, subject_id, statement_id, effective_at, recorded_at,"
                " decision, version, record_id FROM timeline ORDER BY sequence",
                {},
            )
            return [tuple(row) for row in cur.fetchall()]

    # Outbox -------------------------------------------------------------------------------

    def select_notifications(
        self, start: int | None, limit: int, stop: int | None = None, topics: Sequence[str] = ()
    ) -> Sequence[Notification]:
        where = ["position >= :start"]
        params: dict[str, Any] = {"start": start or 1, "limit": limit}
        if stop is not None:
            where.append("position <= :stop")
            params["stop"] = stop
        if topics:
            names, topic_params = in_list("t", topics)
            where.append(f"topic IN {names}")
            params |= topic_params
        sql = select(
            "position, topic, originator_id, originator_version, envelope",
            "outbox",
            f"WHERE {' AND '.join(where)} ORDER BY position LIMIT :limit",
        )
        with self._read() as cur:
            cur.execute(sql, params)
            return [
                Notification(
                    id=position,
                    originator_id=originator_id,
                    originator_version=originator_version,
                    topic=topic,
                    state=bytes(envelope),
                )
                for position, topic, originator_id, originator_version, envelope in cur.fetchall()
            ]

    def max_notification_id(self) -> int | None:
        with self._read() as cur:
            cur.execute("SELECT max(position) FROM outbox", {})
            value = cur.fetchone()[0]
        return None if value is None else int(value)

    # Helpers --------------------------------------------------------------------------------

    def _lock_head(self, cur: Cursor) -> Head:
        """Takes the writers' lock (appends, publishes, merges, erasures, rebuilds are
        serialized on it) and returns the head as of that moment."""
        cur.execute(HEAD + self._lock_clause, {})
        return Head.from_row(cur.fetchone())

    def _records_by_keys(self, cur: Cursor, keys: Sequence[str]) -> dict[str, ConsentRecord]:
        if not keys:
            return {}
        names, params = in_list("k", keys)
        cur.execute(select(RECORD_COLUMNS, "ledger", f"WHERE idempotency_key IN {names}"), params)
        found = (record_from_row(row) for row in cur.fetchall())
        return {r.idempotency_key: r for r in found if r.idempotency_key is not None}

    def _one_record(self, where: str, params: Params) -> ConsentRecord | None:
        with self._read() as cur:
            cur.execute(select(RECORD_COLUMNS, "ledger", f"WHERE {where}"), params)
            row = cur.fetchone()
        return None if row is None else record_from_row(row)

    @staticmethod
    def _canonical(cur: Cursor, subject_id: str) -> str:
        cur.execute(
            "SELECT canonical_id FROM subject_aliases WHERE merged_id = :id", {"id": subject_id}
        )
        row = cur.fetchone()
        return subject_id if row is None else str(row[0])

    @staticmethod
    def _advance_tracking(cur: Cursor, position: int) -> bool:
        """Moves the tracked IDENTITY position to `position`; False if already past it."""
        cur.execute("SELECT position FROM tracking WHERE id = 1", {})
        if position <= int(cur.fetchone()[0]):
            return False
        cur.execute("UPDATE tracking SET position = :position WHERE id = 1", {"position": position})
        return True


@dataclass(frozen=True)
class _SubjectFacts:
    canonical: str
    erased: bool
    has_key: bool  # a row in subject_keys, even a shredded (NULL) one
    key: bytes | None


def record_leaf_of(record_hash: object) -> bytes:
    """The Merkle leaf hash of a stored record_hash (as domain `record_leaf`)."""
    return leaf_hash(_blob(record_hash))


def _visibility(params: dict[str, Any], as_known_at: datetime | None, statement: str | None) -> str:
    """The optional filters of a point-in-time read, added to `params`. Only present
    clauses are written, so each combination gets a plan that uses its bounds."""
    clauses = ""
    if as_known_at is not None:
        params["known"] = canonical_instant(as_known_at, "as_known_at")
        clauses += " AND recorded_at <= :known"
    if statement is not None:
        params["statement"] = statement
        clauses += " AND statement_id = :statement"
    return clauses


def _outbox_params(
    position: int, event: OutboxEvent, originator_id: str, originator_version: int
) -> dict[str, Any]:
    return {
        "position": position,
        "topic": event.subject,
        "originator_id": originator_id,
        "originator_version": originator_version,
        "envelope": event.envelope,
    }
