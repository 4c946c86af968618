"""What the SQLite and PostgreSQL sync stores share: the schema, the SQL both dialects
accept, rows <-> values, and every operation of `SyncStore`.

A backend supplies only its `Database` (kizuna_kit.sql: connections, transactions,
streaming) and how `apply` is serialized. SQL here uses `:name` parameters.

Instants are stored as fixed-width UTC text with microseconds (domain `rfc3339`), so they
compare as text in both dialects; envelopes, profiles, bodies and holdings are blobs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

from kizuna.events.v1.envelope_pb2 import Envelope
from kizuna_kit.sql import Cursor, Database, Dialect, Params, Row, in_list, insert, select
from kizuna_profilesync.domain.erasure import redacted
from kizuna_profilesync.domain.gating import EventType
from kizuna_profilesync.domain.profile import Profile, ProfileStatus, rfc3339
from kizuna_profilesync.domain.projection import IDENTITY_STREAM
from kizuna_profilesync.domain.statements import Catalogue, statements_changed
from kizuna_profilesync.storage.interface import (
    ConnectorCounts,
    Corrector,
    DeliveryStatus,
    EventFolder,
    OutgoingDelivery,
    Projector,
    ReplayDeriver,
    RewindNotSettled,
    Rewound,
    StoredDelivery,
    StreamDiverged,
    Target,
)
from kizuna_profilesync.storage.serialization import profile_from_bytes, profile_to_bytes

PENDING = DeliveryStatus.PENDING.value
DELIVERED = DeliveryStatus.DELIVERED.value
DEAD = DeliveryStatus.DEAD.value
# The SQL below spells these as literals: the planner sees the status, and no f-string
# SQL needs excusing to the injection lint.
assert (PENDING, DELIVERED, DEAD) == ("pending", "delivered", "dead")

# Schema ------------------------------------------------------------------------------

_TABLES = [
    # seq is assigned as max + 1 under the apply lock (not a sequence), so it has no gaps:
    # a duplicate or a rolled-back apply consumes no number (a rewind forgets rows, and
    # their numbers are not taken again).
    """CREATE TABLE IF NOT EXISTS inbox (
        seq {int} PRIMARY KEY,
        stream {text} NOT NULL,
        position {int} NOT NULL,
        envelope {blob} NOT NULL,
        UNIQUE (stream, position)
    )""",
    # The inbox rows of each identity aggregate (customer), so that an erasure finds the
    # customer's earlier events without reading the whole inbox.
    """CREATE TABLE IF NOT EXISTS inbox_customers (
        customer_id {text} NOT NULL,
        seq {int} NOT NULL,
        PRIMARY KEY (customer_id, seq)
    )""",
    """CREATE TABLE IF NOT EXISTS profiles (
        customer_id {text} PRIMARY KEY,
        document {blob} NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS deliveries (
        connector_id {text} NOT NULL,
        delivery_id {text} NOT NULL,
        seq {int} NOT NULL,
        customer_id {text} NOT NULL,
        type {text} NOT NULL,
        body {blob} NOT NULL,
        status {text} NOT NULL,
        attempts {int} NOT NULL,
        next_attempt_at {text} NOT NULL,
        last_error {text} NOT NULL,
        updated_at {text} NOT NULL,
        PRIMARY KEY (connector_id, delivery_id)
    )""",
    # Pending (or dead) deliveries in seq order, so `due` and `dead_letters` stop after
    # `limit` rows instead of sorting a whole backlog (a replay queues everything).
    "CREATE INDEX IF NOT EXISTS deliveries_by_seq ON deliveries (connector_id, status, seq)",
    # `due` once probed this per row; now unused, it only cost every status change.
    "DROP INDEX IF EXISTS deliveries_by_customer",
    # Each time a stream was rewound (`rewind`): the position past which the inbox forgot
    # it (events applied later past it are that stream's positions numbered again), and
    # the seqs the rewind's own deliveries took, one per customer it corrected. Seqs never
    # go back, though the forgotten inbox rows may have held the last ones: last_seq is
    # at least the last seq taken before the rewind.
    """CREATE TABLE IF NOT EXISTS rewinds (
        stream {text} NOT NULL,
        number {int} NOT NULL,
        after_position {int} NOT NULL,
        forgotten {int} NOT NULL,
        first_seq {int} NOT NULL,
        last_seq {int} NOT NULL,
        rewound_at {text} NOT NULL,
        PRIMARY KEY (stream, number)
    )""",
    """CREATE TABLE IF NOT EXISTS holdings (
        connector_id {text} NOT NULL,
        customer_id {text} NOT NULL,
        data {blob} NOT NULL,
        PRIMARY KEY (connector_id, customer_id)
    )""",
    # The statement catalogue: the latest MAJOR of each statement published, folded from
    # the inbox's publications with the profiles.
    """CREATE TABLE IF NOT EXISTS statements (
        statement_id {text} PRIMARY KEY,
        major {int} NOT NULL
    )""",
]


def schema(dialect: Dialect) -> list[str]:
    """CREATE ... IF NOT EXISTS statements for every table and index, in this dialect."""
    return [
        ddl.format(int=dialect.integer, text=dialect.text, blob=dialect.blob) for ddl in _TABLES
    ]


# SQL both dialects accept ------------------------------------------------------------------

# The last seq taken: by the inbox, or by a rewind (whose forgotten rows may have held
# the highest ones).
LAST_SEQ = """
    SELECT max(seq) AS seq FROM (
        SELECT COALESCE(max(seq), 0) AS seq FROM inbox
        UNION ALL SELECT COALESCE(max(last_seq), 0) FROM rewinds) AS taken"""
# Under the apply lock: which positions of a batch are in already, the last seq, then the
# new rows numbered on from it.
# One row at least: the last seq and the number of rewinds, then each position already
# in (NULL when none is).
SEEN_POSITIONS = f"""
    SELECT last.seq, (SELECT count(*) FROM rewinds), seen.position
    FROM ({LAST_SEQ}) AS last
    LEFT JOIN inbox AS seen
        ON seen.stream = :stream AND seen.position >= :lo AND seen.position <= :hi"""  # noqa: S608
INSERT_INBOX = insert("inbox", "seq, stream, position, envelope")
INSERT_INBOX_CUSTOMER = insert("inbox_customers", "customer_id, seq")
CUSTOMER_INBOX = select(
    "inbox.seq, inbox.envelope",
    "inbox JOIN inbox_customers AS owned ON owned.seq = inbox.seq",
    "WHERE owned.customer_id IN {ids}",
)
REWRITE_INBOX = "UPDATE inbox SET envelope = :envelope WHERE seq = :seq"
STORED_AT_POSITIONS = select(
    "position, envelope", "inbox", "WHERE stream = :stream AND position >= :lo AND position <= :hi"
)
INDEX_COUNTS = """
    SELECT (SELECT count(*) FROM inbox WHERE stream = :stream),
        (SELECT count(*) FROM inbox_customers)"""
INDEX_INBOX_ROW = INSERT_INBOX_CUSTOMER + " ON CONFLICT (customer_id, seq) DO NOTHING"
IDENTITY_INBOX_PAGE = select(
    "seq, envelope", "inbox", "WHERE stream = :stream AND seq > :after ORDER BY seq LIMIT :limit"
)
INDEX_PAGE = 10_000
# Values per IN list (a batch's customers read up front, a round's deliveries marked).
IN_LIST_CHUNK = 500


def execute_per_chunk(cur: Cursor, sql: str, values: Sequence[str], params: Params) -> None:
    """`sql`, whose `{ids}` stands for an IN list, once per IN_LIST_CHUNK of `values`."""
    for start in range(0, len(values), IN_LIST_CHUNK):
        ids, names = in_list("v", values[start : start + IN_LIST_CHUNK])
        cur.execute(sql.format(ids=ids), {**params, **names})


# The distinct streams by an index skip scan (one probe each), then each one's maximum.
POSITIONS = """
    WITH RECURSIVE streams(stream) AS (
        SELECT min(stream) FROM inbox
        UNION ALL
        SELECT (SELECT min(stream) FROM inbox WHERE stream > streams.stream)
        FROM streams WHERE streams.stream IS NOT NULL
    )
    SELECT stream, (SELECT max(position) FROM inbox WHERE inbox.stream = streams.stream)
    FROM streams WHERE stream IS NOT NULL"""
GET_PROFILE = "SELECT document FROM profiles WHERE customer_id = :id"
UPSERT_PROFILE = """
    INSERT INTO profiles (customer_id, document) VALUES (:id, :document)
    ON CONFLICT (customer_id) DO UPDATE SET document = excluded.document"""
DELETE_PROFILE = "DELETE FROM profiles WHERE customer_id = :id"

DELIVERY_COLUMNS = (
    "connector_id, delivery_id, seq, customer_id, type, body, status, attempts, "
    "next_attempt_at, last_error, updated_at"
)
INSERT_DELIVERY = insert("deliveries", DELIVERY_COLUMNS)
# A page of pending deliveries in seq order (deliveries_by_seq), for `due` to walk.
PENDING_PAGE = select(
    DELIVERY_COLUMNS,
    "deliveries",
    """WHERE connector_id = :connector AND status = 'pending' AND seq >= :from
        ORDER BY seq LIMIT :limit""",
)
PENDING_AT = select(
    DELIVERY_COLUMNS,
    "deliveries",
    "WHERE connector_id = :connector AND status = 'pending' AND seq = :seq",
)
# Dead letters in (seq, delivery_id) order, a page after a given one: one event can give
# several customers' deliveries one seq, so the seq alone cannot say where a page ended.
DEAD_LETTERS = select(
    DELIVERY_COLUMNS,
    "deliveries",
    """WHERE connector_id = :connector AND status = 'dead'
        AND (seq > :after OR (seq = :after AND delivery_id > :after_id))
        ORDER BY seq, delivery_id LIMIT :limit""",
)
# A body is only ever needed to send it: once delivered (or superseded) it is blanked,
# so the table keeps no copy of what receivers already hold.
BLANK = b""
# Each mark only moves a pending delivery: a dead or replaced one keeps its state.
MARK_DELIVERED = """
    UPDATE deliveries SET status = 'delivered', body = :blank, updated_at = :now
    WHERE connector_id = :connector AND delivery_id = :id AND status = 'pending'"""
MARK_DELIVERED_IN = """
    UPDATE deliveries SET status = 'delivered', body = :blank, updated_at = :now
    WHERE connector_id = :connector AND delivery_id IN {ids} AND status = 'pending'"""
MARK_FAILED = """
    UPDATE deliveries SET attempts = attempts + 1, last_error = :error,
        next_attempt_at = :next, updated_at = :now
    WHERE connector_id = :connector AND delivery_id = :id AND status = 'pending'"""
MARK_DEAD = """
    UPDATE deliveries SET status = 'dead', attempts = attempts + 1, last_error = :error,
        updated_at = :now
    WHERE connector_id = :connector AND delivery_id = :id AND status = 'pending'"""
# Every delivery carries the customer's whole state (an upsert or a deletion), so a dead
# letter older than a delivery that went through for the same customer is out of date:
# sent now, it would undo the newer one at the receiver. One pass over the delivered
# rows (no index leads with the customer, so a probe per dead letter would be a scan).
OUTDATED_DEAD = """
    SELECT dead.delivery_id FROM deliveries AS dead JOIN (
        SELECT customer_id, max(seq) AS seq FROM deliveries
        WHERE connector_id = :connector AND status = 'delivered' GROUP BY customer_id
    ) AS latest ON latest.customer_id = dead.customer_id AND latest.seq > dead.seq
    WHERE dead.connector_id = :connector AND dead.status = 'dead'"""
SUPERSEDE_DEAD_IN = """
    UPDATE deliveries SET status = 'superseded', body = :blank, updated_at = :now
    WHERE connector_id = :connector AND delivery_id IN {ids} AND status = 'dead'"""
# An erased customer's upserts not sent yet are not sent at all: the deletion queued
# with the erasure tells the receiver everything it may still know. deliveries_by_seq
# leads with connector and status, so this reads the pending and dead rows of every
# connector: little while queues are short, more during a large backlog or replay.
SUPERSEDE_ERASED = """
    UPDATE deliveries SET status = 'superseded', body = :blank, updated_at = :now
    WHERE connector_id IN {connectors} AND status IN ('pending', 'dead')
        AND customer_id IN {ids} AND type = :upserted"""
SUPERSEDE_BEFORE_DELETION = """
    UPDATE deliveries SET status = 'superseded', body = :blank, updated_at = :now
    WHERE connector_id = :connector AND status IN ('pending', 'dead') AND seq < :seq
        AND customer_id = :customer AND type = :upserted"""
# RETURNING rather than rowcount: PostgreSQL's pipeline mode knows no rowcount yet.
RETRY_DEAD = """
    UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = :now,
        updated_at = :now
    WHERE connector_id = :connector AND status = 'dead'
    RETURNING delivery_id"""
COUNT_BY_STATUS = (
    "SELECT status, count(*) FROM deliveries WHERE connector_id = :connector GROUP BY status"
)
PENDING_SUMMARY = """
    SELECT min(seq), sum(CASE WHEN attempts > 0 THEN 1 ELSE 0 END) FROM deliveries
    WHERE connector_id = :connector AND status = 'pending'"""
# The error of the most recently failed delivery still pending or dead (none once all
# went through).
LAST_ERROR = """
    SELECT last_error FROM deliveries
    WHERE connector_id = :connector AND status IN ('pending', 'dead') AND last_error <> ''
    ORDER BY updated_at DESC LIMIT 1"""

# A rewind: the stream's inbox rows past a position, what hangs on them, and what stays.
PAST = "SELECT seq FROM inbox WHERE stream = :stream AND position > :after"
COUNT_PAST = f"SELECT count(*) FROM ({PAST}) AS past"  # noqa: S608
UNINDEX_PAST = f"DELETE FROM inbox_customers WHERE seq IN ({PAST})"  # noqa: S608
FORGET_PAST = "DELETE FROM inbox WHERE stream = :stream AND position > :after"
INBOX_PAGE = select("seq, envelope", "inbox", "WHERE seq > :after ORDER BY seq LIMIT :limit")
PROFILES_PAGE = select(
    "customer_id, document",
    "profiles",
    "WHERE customer_id > :after ORDER BY customer_id LIMIT :limit",
)
REWINDS = select("stream, after_position", "rewinds", "ORDER BY stream, number")
INSERT_REWIND = insert(
    "rewinds", "stream, number, after_position, forgotten, first_seq, last_seq, rewound_at"
)
# The last seq of the last rewind that still has deliveries of this connector to send at
# or before it (its own corrections, or the forgotten events'): NULL when none has.
UNSETTLED_REWIND = """
    SELECT max(rewinds.last_seq) FROM rewinds WHERE EXISTS (
        SELECT 1 FROM deliveries WHERE connector_id = :connector
        AND status IN ('pending', 'dead') AND seq <= rewinds.last_seq)"""
REWIND_PAGE = 10_000

CATALOGUE = "SELECT statement_id, major FROM statements"
UPSERT_STATEMENT = """
    INSERT INTO statements (statement_id, major) VALUES (:statement, :major)
    ON CONFLICT (statement_id) DO UPDATE SET major = excluded.major"""
# A connector's holdings with the profiles, a page at a time (`_paged`).
HELD_PAGE = """
    SELECT h.customer_id, p.document FROM holdings AS h
    LEFT JOIN profiles AS p ON p.customer_id = h.customer_id
    WHERE h.connector_id = :connector AND h.customer_id > :after
    ORDER BY h.customer_id LIMIT :limit"""

HOLDS = "SELECT 1 FROM holdings WHERE connector_id = :connector AND customer_id = :customer"
UPSERT_HOLDING = """
    INSERT INTO holdings (connector_id, customer_id, data) VALUES (:connector, :customer, :data)
    ON CONFLICT (connector_id, customer_id) DO UPDATE SET data = excluded.data"""
DELETE_HOLDING = "DELETE FROM holdings WHERE connector_id = :connector AND customer_id = :customer"
HOLDINGS = (
    "SELECT customer_id, data FROM holdings WHERE connector_id = :connector ORDER BY customer_id"
)


def utc_now() -> datetime:
    return datetime.now(UTC)


# Rows <-> values ----------------------------------------------------------------------------


def delivery_params(delivery: OutgoingDelivery, now: str) -> dict[str, Any]:
    """A new delivery as INSERT_DELIVERY's parameters: pending, never tried, due `now`."""
    return {
        "connector_id": delivery.connector_id,
        "delivery_id": delivery.delivery_id,
        "seq": delivery.seq,
        "customer_id": delivery.customer_id,
        "type": delivery.type,
        "body": delivery.body,
        "status": PENDING,
        "attempts": 0,
        "next_attempt_at": now,
        "last_error": "",
        "updated_at": now,
    }


def delivery_from_row(row: Row) -> StoredDelivery:
    connector_id, delivery_id, seq, customer_id, type_, body = row[:6]
    status, attempts, next_attempt_at, last_error, updated_at = row[6:]
    return StoredDelivery(
        connector_id=connector_id,
        delivery_id=delivery_id,
        seq=seq,
        customer_id=customer_id,
        type=type_,
        body=bytes(body),
        status=DeliveryStatus(status),
        attempts=attempts,
        next_attempt_at=datetime.fromisoformat(next_attempt_at),
        last_error=last_error,
        updated_at=datetime.fromisoformat(updated_at),
    )


# The store --------------------------------------------------------------------------------


REBUILD_CHUNK = 5000


class SqlSyncStore:
    """`SyncStore` over a `Database`; see the module docstring for what a backend adds."""

    # Run first in `apply` and in the writes that must not interleave with one (replays,
    # dropping a connector), to serialize them, so that inbox seqs commit in seq order.
    # None where the write transaction already holds the database's only write lock.
    _serialize_sql: ClassVar[str | None] = None

    def __init__(self, db: Database, clock: Callable[[], datetime] = utc_now) -> None:
        self._db = db
        # Stamps what the interface gives no time for (new deliveries, failures).
        self._clock = clock
        try:
            db.setup(schema(db.dialect))
            self._index_inbox()
            # stream -> positions it was rewound past, oldest first; read again whenever
            # an apply finds more rewinds than these (one made by another process).
            self._rewinds: dict[str, list[int]] = {}
            with db.read() as cur:
                self._read_rewinds(cur)
        except BaseException:
            db.close()
            raise

    def close(self) -> None:
        self._db.close()

    def _index_inbox(self) -> None:
        """Completes inbox_customers at start, a page per transaction, so that a large
        inbox does not hold the apply lock all along."""
        after: int | None = 0
        while after is not None:
            with self._db.write() as cur:
                self._serialize(cur)
                if after == 0 and self._index_complete(cur):
                    return
                after = self._index_page(cur, after)

    def _complete_index(self, cur: Cursor) -> None:
        """Before an erasure relies on inbox_customers, within its transaction."""
        if self._index_complete(cur):
            return
        after: int | None = 0
        while after is not None:
            after = self._index_page(cur, after)

    @staticmethod
    def _index_complete(cur: Cursor) -> bool:
        """inbox_customers has a row per identity inbox row. It lacks some in a store made
        before it, or after a replica of an older version applied events during a
        rolling upgrade."""
        cur.execute(INDEX_COUNTS, {"stream": IDENTITY_STREAM})
        inbox_rows, indexed = cur.fetchone()
        return bool(inbox_rows == indexed)

    @staticmethod
    def _index_page(cur: Cursor, after: int) -> int | None:
        """Indexes a page of identity inbox rows after seq `after`; the next page's start,
        or None at the end."""
        cur.execute(
            IDENTITY_INBOX_PAGE, {"stream": IDENTITY_STREAM, "after": after, "limit": INDEX_PAGE}
        )
        rows = cur.fetchall()
        if not rows:
            return None
        cur.executemany(
            INDEX_INBOX_ROW,
            [
                {"customer_id": Envelope.FromString(bytes(data)).aggregate_id, "seq": seq}
                for seq, data in rows
            ],
        )
        return int(rows[-1][0])

    # Projection ------------------------------------------------------------------

    def apply(
        self, stream: str, envelope: Envelope, targets: Sequence[Target], projector: Projector
    ) -> int | None:
        return self.apply_batch(stream, [envelope], targets, projector)[0]

    def apply_batch(
        self,
        stream: str,
        envelopes: Sequence[Envelope],
        targets: Sequence[Target],
        projector: Projector,
    ) -> list[int | None]:
        if not envelopes:
            return []
        with self._db.write() as cur:
            self._serialize(cur)
            positions = [e.position for e in envelopes]
            cur.execute(
                SEEN_POSITIONS, {"stream": stream, "lo": min(positions), "hi": max(positions)}
            )
            rows = cur.fetchall()
            last = int(rows[0][0])
            if int(rows[0][1]) != sum(len(a) for a in self._rewinds.values()):
                self._read_rewinds(cur)
            seen = {int(p) for _, _, p in rows if p is not None}
            self._check_same_events(cur, stream, [e for e in envelopes if e.position in seen])
            fresh: list[tuple[int, Envelope]] = []
            seqs: list[int | None] = []
            for envelope in envelopes:
                if envelope.position in seen:
                    seqs.append(None)  # seen before: exactly-once effect
                    continue
                seen.add(envelope.position)
                last += 1
                fresh.append((last, self._renumbered(stream, envelope)))
                seqs.append(last)
            if not fresh:
                return seqs
            cur.executemany(
                INSERT_INBOX,
                [
                    {
                        "seq": seq,
                        "stream": stream,
                        "position": e.position,
                        "envelope": e.SerializeToString(),
                    }
                    for seq, e in fresh
                ],
            )
            if stream == IDENTITY_STREAM:
                cur.executemany(
                    INSERT_INBOX_CUSTOMER,
                    [{"customer_id": e.aggregate_id, "seq": seq} for seq, e in fresh],
                )
            # Every event of the batch sees the state its predecessors left: profiles and
            # holdings are read once (the events' own aggregates up front, in one query
            # each) and then kept here; only the final state of each is written.
            profiles: dict[str, Profile | None] = {}
            held: dict[tuple[str, str], bool] = {}
            connector_ids = [t.connector_id for t in targets]
            self._prefetch(cur, {e.aggregate_id for _, e in fresh}, connector_ids, profiles, held)

            def load(customer_id: str) -> Profile | None:
                if customer_id not in profiles:
                    cur.execute(GET_PROFILE, {"id": customer_id})
                    found = cur.fetchone()
                    profiles[customer_id] = None if found is None else _profile(found[0])
                return profiles[customer_id]

            def holds(connector_id: str, customer_id: str) -> bool:
                key = (connector_id, customer_id)
                if key not in held:
                    cur.execute(HOLDS, {"connector": connector_id, "customer": customer_id})
                    held[key] = cur.fetchone() is not None
                return held[key]

            def held_profiles(connector_id: str) -> Iterator[tuple[str, Profile | None]]:
                # The stored holdings and profiles, as this batch's earlier events left them.
                known = {c: h for (k, c), h in held.items() if k == connector_id}
                for customer_id, document in _paged(cur, HELD_PAGE, "", connector=connector_id):
                    if customer_id in known:
                        continue
                    if customer_id in profiles:
                        yield customer_id, profiles[customer_id]
                    else:  # not kept: a connector may hold millions
                        yield customer_id, None if document is None else _profile(document)
                for customer_id, holding in sorted(known.items()):
                    if holding:
                        yield customer_id, load(customer_id)

            catalogue = stored_catalogue = _catalogue(cur)
            changed: dict[str, Profile | None] = {}
            deliveries: list[OutgoingDelivery] = []
            for seq, envelope in fresh:
                event_changed, event_deliveries, catalogue = projector(
                    envelope, seq, load, targets, holds, catalogue, held_profiles
                )
                profiles.update(event_changed)
                changed.update(event_changed)
                for d in event_deliveries:
                    held[(d.connector_id, d.customer_id)] = d.holding is not None
                deliveries += event_deliveries
            self._write_projection(cur, changed, deliveries)
            _write_catalogue(cur, stored_catalogue, catalogue)
            self._supersede_before_deletions(cur, deliveries)
            # A profile changes to a tombstone only on its erasure (a redelivery is
            # skipped above, and nothing changes an erased profile again).
            erased = sorted(c for c, p in changed.items() if p and p.status == ProfileStatus.ERASED)
            if erased:
                self._forget(cur, erased, connector_ids)
        return seqs

    def _supersede_before_deletions(
        self, cur: Cursor, deliveries: Sequence[OutgoingDelivery]
    ) -> None:
        """A connector told to delete a customer (consent withdrawn, say) gets none of
        that customer's upserts not sent yet: they would reach it after the customer
        said no. The deletion itself still goes out."""
        now = rfc3339(self._clock())
        params = [
            {
                "connector": d.connector_id,
                "customer": d.customer_id,
                "seq": d.seq,
                "blank": BLANK,
                "now": now,
                "upserted": EventType.UPSERTED.value,
            }
            for d in deliveries
            if d.type == EventType.DELETED.value
        ]
        if params:
            cur.executemany(SUPERSEDE_BEFORE_DELETION, params)

    def _read_rewinds(self, cur: Cursor) -> None:
        cur.execute(REWINDS, {})
        rewinds: dict[str, list[int]] = {}
        for stream, after in cur.fetchall():
            rewinds.setdefault(stream, []).append(int(after))
        self._rewinds = rewinds

    def _renumbered(self, stream: str, envelope: Envelope) -> Envelope:
        """The envelope, its event id marked with the rewinds its position lies past."""
        passed = sum(1 for after in self._rewinds.get(stream, ()) if envelope.position > after)
        if not passed:
            return envelope
        marked = Envelope()
        marked.CopyFrom(envelope)
        marked.event_id = f"{envelope.event_id}~{passed}"
        return marked

    def rewind(
        self,
        stream: str,
        after: int,
        targets: Sequence[Target],
        fold_event: EventFolder,
        corrector: Corrector,
    ) -> Rewound:
        params = {"stream": stream, "after": after}
        with self._db.write() as cur:
            self._serialize(cur)
            cur.execute(COUNT_PAST, params)
            forgotten = int(cur.fetchone()[0])
            if not forgotten:
                return Rewound(0, 0, 0)
            self._read_rewinds(cur)
            cur.execute(LAST_SEQ, {})
            taken = int(cur.fetchone()[0])
            # The forgotten events' deliveries not sent yet still go out, in order: the
            # holdings already count them, and the corrections come after them.
            cur.execute(UNINDEX_PAST, params)
            cur.execute(FORGET_PAST, params)
            stored_catalogue = _catalogue(cur)
            changes, catalogue = self._refold(cur, fold_event, stored_catalogue)
            held: dict[tuple[str, str], bool] = {}
            self._prefetch_holdings(cur, sorted(changes), [t.connector_id for t in targets], held)
            number = len(self._rewinds.get(stream, ())) + 1
            deliveries: list[OutgoingDelivery] = []
            # A seq of its own per customer corrected, after every seq taken before.
            for seq, customer_id in enumerate(sorted(changes), start=taken + 1):
                deliveries += corrector(
                    {customer_id: changes[customer_id]},
                    seq,
                    number,
                    lambda connector, customer: held[(connector, customer)],
                    (stored_catalogue, catalogue),
                )
            self._write_projection(cur, {c: a for c, (_, a) in changes.items()}, deliveries)
            _write_catalogue(cur, stored_catalogue, catalogue)
            cur.execute(
                INSERT_REWIND,
                {
                    "stream": stream,
                    "number": number,
                    "after_position": after,
                    "forgotten": forgotten,
                    "first_seq": taken + 1,
                    "last_seq": taken + len(changes),
                    "rewound_at": rfc3339(self._clock()),
                },
            )
        self._rewinds.setdefault(stream, []).append(after)
        return Rewound(forgotten, len(changes), len(deliveries))

    @staticmethod
    def _refold(
        cur: Cursor, fold_event: EventFolder, stored_catalogue: Catalogue
    ) -> tuple[dict[str, tuple[Profile | None, Profile | None]], Catalogue]:
        """Every profile and the catalogue folded again from the inbox (within the caller's
        transaction). The profiles that differ from the stored ones, as customer ->
        (stored, refolded), with those whose consents a changed statement reads otherwise;
        and the refolded catalogue (`stored_catalogue` itself when equal)."""
        refolded: dict[str, Profile] = {}
        catalogue: dict[str, int] = {}
        for _seq, data in _paged(cur, INBOX_PAGE, 0):
            fold_event(refolded, catalogue, Envelope.FromString(bytes(data)))
        statements = statements_changed(stored_catalogue, catalogue)
        changes: dict[str, tuple[Profile | None, Profile | None]] = {}
        for customer_id, document in _paged(cur, PROFILES_PAGE, ""):
            stored, again = _profile(document), refolded.pop(customer_id, None)
            if again != stored or not statements.isdisjoint(stored.consents):
                changes[customer_id] = (stored, again)
        changes.update((c, (None, p)) for c, p in refolded.items())
        return changes, catalogue if statements else stored_catalogue

    def _forget(
        self, cur: Cursor, customer_ids: Sequence[str], connector_ids: Sequence[str]
    ) -> None:
        """Erased customers keep no personal data here: their earlier events in the inbox
        are stored again without it, and their upserts not yet sent are superseded."""
        self._complete_index(cur)
        for start in range(0, len(customer_ids), IN_LIST_CHUNK):
            ids, names = in_list("c", customer_ids[start : start + IN_LIST_CHUNK])
            cur.execute(CUSTOMER_INBOX.format(ids=ids), names)
            rewrites = []
            for seq, data in cur.fetchall():
                without = redacted(Envelope.FromString(bytes(data)))
                if without is not None:
                    rewrites.append({"seq": seq, "envelope": without.SerializeToString()})
            if rewrites:
                cur.executemany(REWRITE_INBOX, rewrites)
            if connector_ids:
                connectors, connector_names = in_list("k", connector_ids)
                cur.execute(
                    SUPERSEDE_ERASED.format(ids=ids, connectors=connectors),
                    {
                        **names,
                        **connector_names,
                        "blank": BLANK,
                        "now": rfc3339(self._clock()),
                        "upserted": EventType.UPSERTED.value,
                    },
                )

    @staticmethod
    def _check_same_events(cur: Cursor, stream: str, again: Sequence[Envelope]) -> None:
        """Raises StreamDiverged unless every envelope is the event the inbox holds at its
        position. A redelivery or a relay's second publish carries the same event; what
        tells events apart survives an erasure's rewrite of the inbox."""
        if not again:
            return
        positions = [e.position for e in again]
        cur.execute(
            STORED_AT_POSITIONS, {"stream": stream, "lo": min(positions), "hi": max(positions)}
        )
        held = {int(p): _identity_of(Envelope.FromString(bytes(e))) for p, e in cur.fetchall()}
        for envelope in again:
            if held.get(envelope.position) != _identity_of(envelope):
                raise StreamDiverged(stream, envelope.position)

    def _prefetch(
        self,
        cur: Cursor,
        customer_ids: set[str],
        connector_ids: Sequence[str],
        profiles: dict[str, Profile | None],
        held: dict[tuple[str, str], bool],
    ) -> None:
        ids = sorted(c for c in customer_ids if c)
        for start in range(0, len(ids), IN_LIST_CHUNK):
            chunk = ids[start : start + IN_LIST_CHUNK]
            placeholders, names = in_list("c", chunk)
            cur.execute(
                select("customer_id, document", "profiles", f"WHERE customer_id IN {placeholders}"),
                names,
            )
            profiles.update(dict.fromkeys(chunk))
            for customer_id, document in cur.fetchall():
                profiles[customer_id] = _profile(document)
        self._prefetch_holdings(cur, ids, connector_ids, held)

    @staticmethod
    def _prefetch_holdings(
        cur: Cursor,
        customer_ids: Sequence[str],
        connector_ids: Sequence[str],
        held: dict[tuple[str, str], bool],
    ) -> None:
        """Whether each connector holds each of these customers, into `held`."""
        if not connector_ids:
            return
        connector_list, connectors = in_list("k", connector_ids)
        for start in range(0, len(customer_ids), IN_LIST_CHUNK):
            chunk = customer_ids[start : start + IN_LIST_CHUNK]
            placeholders, names = in_list("c", chunk)
            cur.execute(
                select(
                    "connector_id, customer_id",
                    "holdings",
                    f"WHERE connector_id IN {connector_list} AND customer_id IN {placeholders}",
                ),
                {**names, **connectors},
            )
            held.update(dict.fromkeys(((k, c) for k in connector_ids for c in chunk), False))
            for connector_id, customer_id in cur.fetchall():
                held[(connector_id, customer_id)] = True

    def _write_projection(
        self,
        cur: Cursor,
        changed: dict[str, Profile | None],
        deliveries: Sequence[OutgoingDelivery],
    ) -> None:
        # At most one statement per kind, whatever the event touched.
        upserts = [
            {"id": cid, "document": profile_to_bytes(p)}
            for cid, p in changed.items()
            if p is not None
        ]
        deletes = [{"id": cid} for cid, p in changed.items() if p is None]
        if upserts:
            cur.executemany(UPSERT_PROFILE, upserts)
        if deletes:
            cur.executemany(DELETE_PROFILE, deletes)
        if deliveries:
            now = rfc3339(self._clock())
            cur.executemany(INSERT_DELIVERY, [delivery_params(d, now) for d in deliveries])
            # The last delivery per (connector, customer) says what it holds afterwards.
            holdings = {(d.connector_id, d.customer_id): d.holding for d in deliveries}
            self._write_holdings(cur, holdings)

    def replace_profiles(
        self, profiles: Iterable[tuple[str, Profile]], catalogue: Catalogue
    ) -> int:
        rows = 0
        with self._db.write() as cur:
            self._serialize(cur)
            replace_catalogue(cur, catalogue)
            cur.execute("DELETE FROM profiles", {})
            chunk: list[dict[str, Any]] = []
            for customer_id, profile in profiles:
                chunk.append({"id": customer_id, "document": profile_to_bytes(profile)})
                if len(chunk) >= REBUILD_CHUNK:
                    cur.executemany(UPSERT_PROFILE, chunk)
                    rows += len(chunk)
                    chunk = []
            if chunk:
                cur.executemany(UPSERT_PROFILE, chunk)
                rows += len(chunk)
        return rows

    def catalogue(self) -> Catalogue:
        with self._db.read() as cur:
            return _catalogue(cur)

    def get_profile(self, customer_id: str) -> Profile | None:
        with self._db.read() as cur:
            cur.execute(GET_PROFILE, {"id": customer_id})
            row = cur.fetchone()
        return None if row is None else _profile(row[0])

    def positions(self) -> dict[str, int]:
        with self._db.read() as cur:
            cur.execute(POSITIONS, {})
            return {stream: int(position) for stream, position in cur.fetchall()}

    def last_seq(self) -> int:
        with self._db.read() as cur:
            cur.execute(LAST_SEQ, {})
            return int(cur.fetchone()[0])

    def inbox(self, from_seq: int = 1) -> Iterator[tuple[int, str, Envelope]]:
        sql = select("seq, stream, envelope", "inbox", "WHERE seq >= :from ORDER BY seq")
        for seq, stream, data in self._db.stream(sql, {"from": from_seq}, binary=True):
            yield seq, stream, Envelope.FromString(bytes(data))

    # Deliveries ----------------------------------------------------------------------

    def due(self, connector_id: str, now: datetime, limit: int) -> list[StoredDelivery]:
        """Walks the pending rows in seq order, a page at a time. A customer's earlier
        pending deliveries come before its later ones, so the first row met of each
        customer is its oldest, and holds back the rest. (A NOT EXISTS probe per row
        did the same in SQL, but while the statistics lag a growing queue PostgreSQL
        planned it as a scan of every pending row per row.)"""
        if limit < 1:
            return []
        at = rfc3339(now)
        held: set[str] = set()
        found: list[StoredDelivery] = []
        params: dict[str, object] = {"connector": connector_id, "from": 0, "limit": limit}
        with self._db.read() as cur:
            while True:
                cur.execute(PENDING_PAGE, params)
                rows = cur.fetchall()
                full = len(rows) == limit
                if full:
                    # Rows sharing a seq (one event's customers) are walked together: the
                    # last seq's rows come whole with the next page, or, when they fill
                    # this one, all of them now.
                    last = rows[-1][2]
                    if rows[0][2] == last:
                        cur.execute(PENDING_AT, {"connector": connector_id, "seq": last})
                        rows, params["from"] = cur.fetchall(), last + 1
                    else:
                        rows, params["from"] = [r for r in rows if r[2] != last], last
                for row in rows:
                    customer_id, next_attempt_at = row[3], row[8]
                    if customer_id in held:
                        continue
                    held.add(customer_id)
                    if next_attempt_at <= at:
                        found.append(delivery_from_row(row))
                        if len(found) == limit:
                            return found
                if not full:
                    return found

    def mark_delivered(self, connector_id: str, delivery_id: str, now: datetime) -> None:
        params = {"connector": connector_id, "id": delivery_id, "now": rfc3339(now), "blank": BLANK}
        with self._db.write() as cur:
            cur.execute(MARK_DELIVERED, params)

    def mark_delivered_many(
        self, connector_id: str, delivery_ids: Sequence[str], now: datetime
    ) -> None:
        if not delivery_ids:
            return
        at = rfc3339(now)
        with self._db.write() as cur:
            # One statement per chunk, not per delivery: this runs for every delivery sent.
            params = {"connector": connector_id, "now": at, "blank": BLANK}
            execute_per_chunk(cur, MARK_DELIVERED_IN, delivery_ids, params)

    def mark_failed(
        self, connector_id: str, delivery_id: str, error: str, next_attempt_at: datetime
    ) -> None:
        params = {
            "connector": connector_id,
            "id": delivery_id,
            "error": error,
            "next": rfc3339(next_attempt_at),
            "now": rfc3339(self._clock()),
        }
        with self._db.write() as cur:
            cur.execute(MARK_FAILED, params)

    def mark_dead(self, connector_id: str, delivery_id: str, error: str, now: datetime) -> None:
        params = {"connector": connector_id, "id": delivery_id, "error": error, "now": rfc3339(now)}
        with self._db.write() as cur:
            cur.execute(MARK_DEAD, params)

    def counts(self, connector_id: str) -> ConnectorCounts:
        params = {"connector": connector_id}
        with self._db.read() as cur:
            cur.execute(COUNT_BY_STATUS, params)
            by_status = {status: int(n) for status, n in cur.fetchall()}
            cur.execute(PENDING_SUMMARY, params)
            oldest, failed = cur.fetchone()
            cur.execute(LAST_ERROR, params)
            error = cur.fetchone()
        return ConnectorCounts(
            delivered=by_status.get(DELIVERED, 0),
            pending=by_status.get(PENDING, 0),
            failed=int(failed or 0),
            dead=by_status.get(DEAD, 0),
            oldest_pending_seq=None if oldest is None else int(oldest),
            last_error="" if error is None else str(error[0]),
        )

    def dead_letters(
        self, connector_id: str, limit: int, after: tuple[int, str] = (0, "")
    ) -> list[StoredDelivery]:
        after_seq, after_id = after
        params = {
            "connector": connector_id,
            "after": after_seq,
            "after_id": after_id,
            "limit": limit,
        }
        with self._db.read() as cur:
            cur.execute(DEAD_LETTERS, params)
            return [delivery_from_row(row) for row in cur.fetchall()]

    def retry_dead(self, connector_id: str, now: datetime) -> int:
        params = {"connector": connector_id, "now": rfc3339(now), "blank": BLANK}
        with self._db.write() as cur:
            cur.execute(OUTDATED_DEAD, params)
            outdated = [delivery_id for (delivery_id,) in cur.fetchall()]
            execute_per_chunk(cur, SUPERSEDE_DEAD_IN, outdated, params)
            cur.execute(RETRY_DEAD, params)
            return len(cur.fetchall())

    def replay(self, connector_id: str, from_seq: int, derive: ReplayDeriver) -> int:
        params = {"connector": connector_id, "from": from_seq}
        with self._db.write() as cur:
            self._serialize(cur)
            unsettled = _unsettled_rewind(cur, connector_id)
            if unsettled is not None and from_seq <= unsettled:
                raise RewindNotSettled(connector_id, unsettled)
            inbox = (
                (int(seq), Envelope.FromString(bytes(data)))
                for seq, data in _paged(cur, INBOX_PAGE, 0)
            )
            deliveries, holdings = derive(inbox)
            strangers = {d.connector_id for d in deliveries} - {connector_id}
            if strangers:
                raise ValueError(f"deliveries of other connectors: {sorted(strangers)}")
            cur.execute(
                "DELETE FROM deliveries WHERE connector_id = :connector AND seq >= :from", params
            )
            if deliveries:
                now = rfc3339(self._clock())
                cur.executemany(INSERT_DELIVERY, [delivery_params(d, now) for d in deliveries])
            cur.execute("DELETE FROM holdings WHERE connector_id = :connector", params)
            held = {(connector_id, c): data for c, data in holdings.items() if data is not None}
            self._write_holdings(cur, held)
        return len(deliveries)

    def unsettled_rewind(self, connector_id: str) -> int | None:
        with self._db.read() as cur:
            return _unsettled_rewind(cur, connector_id)

    def profiles(self) -> Iterator[Profile]:
        sql = select("document", "profiles", "ORDER BY customer_id")
        for (document,) in self._db.stream(sql, {}, binary=True):
            yield _profile(document)

    def holdings(self, connector_id: str) -> Iterator[tuple[str, bytes]]:
        for customer_id, data in self._db.stream(HOLDINGS, {"connector": connector_id}):
            yield customer_id, bytes(data)

    def drop_connector(self, connector_id: str) -> None:
        params = {"connector": connector_id}
        with self._db.write() as cur:
            self._serialize(cur)
            cur.execute("DELETE FROM deliveries WHERE connector_id = :connector", params)
            cur.execute("DELETE FROM holdings WHERE connector_id = :connector", params)

    # Helpers ---------------------------------------------------------------------------

    def _serialize(self, cur: Cursor) -> None:
        if self._serialize_sql is not None:
            cur.execute(self._serialize_sql, {})

    @staticmethod
    def _write_holdings(cur: Cursor, holdings: Mapping[tuple[str, str], bytes | None]) -> None:
        upserts = [
            {"connector": connector, "customer": customer, "data": data}
            for (connector, customer), data in holdings.items()
            if data is not None
        ]
        deletes = [
            {"connector": connector, "customer": customer}
            for (connector, customer), data in holdings.items()
            if data is None
        ]
        if upserts:
            cur.executemany(UPSERT_HOLDING, upserts)
        if deletes:
            cur.executemany(DELETE_HOLDING, deletes)


def _unsettled_rewind(cur: Cursor, connector_id: str) -> int | None:
    cur.execute(UNSETTLED_REWIND, {"connector": connector_id})
    found = cur.fetchone()[0]
    return None if found is None else int(found)


def _paged(cur: Cursor, sql: str, start: object, **params: object) -> Iterator[Row]:
    """The rows of `sql`, read REWIND_PAGE at a time on `cur` (within its transaction):
    each page starts `:after` the first column of the previous page's last row. A page is
    read whole before its rows are handed out, so the caller may use `cur` meanwhile."""
    after = start
    while rows := _fetch_page(cur, sql, after, params):
        yield from rows
        after = rows[-1][0]


def _fetch_page(cur: Cursor, sql: str, after: object, params: Params) -> list[Row]:
    cur.execute(sql, {**params, "after": after, "limit": REWIND_PAGE})
    return cur.fetchall()


def _catalogue(cur: Cursor) -> Catalogue:
    cur.execute(CATALOGUE, {})
    return {str(statement_id): int(major) for statement_id, major in cur.fetchall()}


def replace_catalogue(cur: Cursor, catalogue: Catalogue) -> None:
    _write_catalogue(cur, _catalogue(cur), catalogue)


def _write_catalogue(cur: Cursor, stored: Catalogue, catalogue: Catalogue) -> None:
    """Writes what differs from the stored catalogue (statements are never unpublished, but
    a rewind can forget a publication: those rows go)."""
    if catalogue is stored:
        return
    gone = [{"statement": s} for s in stored if s not in catalogue]
    if gone:
        cur.executemany("DELETE FROM statements WHERE statement_id = :statement", gone)
    rows = [
        {"statement": s, "major": major} for s, major in catalogue.items() if stored.get(s) != major
    ]
    if rows:
        cur.executemany(UPSERT_STATEMENT, rows)


def _identity_of(envelope: Envelope) -> tuple[object, ...]:
    return (
        envelope.aggregate_id,
        envelope.aggregate_version,
        envelope.type,
        envelope.recorded_at.seconds,
        envelope.recorded_at.nanos,
    )


def _profile(document: object) -> Profile:
    if not isinstance(document, bytes | bytearray | memoryview):
        raise TypeError("a profile document is not bytes")
    return profile_from_bytes(bytes(document))
