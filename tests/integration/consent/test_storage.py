"""The ledger store on SQLite and on PostgreSQL (each test runs on both): chained appends
and idempotency, append-only enforced by the database, tamper detection over what is
stored, point-in-time state against the domain's fold, concurrent group commits, merges
and erasures applied once, and the timeline rebuilt from the ledger."""

from __future__ import annotations

import random
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kizuna_consent.application import ConsentApplication, ConsentRequest
from kizuna_consent.domain.chain import verify_chain
from kizuna_consent.domain.merkle import EMPTY_ROOT, leaf_hash, root_of
from kizuna_consent.domain.records import ConsentRecord, Decision
from kizuna_consent.domain.state import state_at
from kizuna_consent.domain.statements import StatementVersionExists, Version, publish_statement
from kizuna_consent.evidence import Evidence
from kizuna_consent.storage.common import RECORD_COLUMNS
from kizuna_consent.storage.factory import open_store
from kizuna_consent.storage.interface import (
    Appended,
    LedgerStore,
    NewConsent,
    OutboxEvent,
    SubjectErased,
    SubjectKey,
    TreeState,
)
from tests.integration.consent.conftest import (
    DB_ERRORS,
    STATEMENTS,
    T0,
    Ledger,
    consent,
    event_for,
)

pytestmark = pytest.mark.integration

G, W = Decision.GRANTED, Decision.WITHDRAWN


def leaves(records: list[ConsentRecord]) -> list[bytes]:
    return [leaf_hash(r.record_hash) for r in records]


def created(appended: list[Appended]) -> list[ConsentRecord]:
    return [a.record for a in appended if a.created]


def counts(ledger: Ledger) -> tuple[int, int | None, int]:
    """(records, last outbox position, timeline rows): what any write would move."""
    return (
        len(list(ledger.store.records())),
        ledger.store.max_notification_id(),
        len(ledger.store.timeline_rows()),
    )


def varied_ledger(ledger: Ledger, n: int = 6) -> list[ConsentRecord]:
    """n records over three subjects and statements, decisions, versions and keys varying,
    effective times out of order; appended in two batches."""
    items = [
        consent(
            f"cust-{i % 3}",
            statement_id=STATEMENTS[i % 3],
            decision=G if i % 2 == 0 else W,
            version=("1.0", "2.1")[i % 2],
            effective_at=T0 - timedelta(days=(i * 7) % 5, microseconds=i * 7919),
            key=f"req-{i}" if i % 2 else None,
            evidence=bytes([i]) * (i + 1),
        )
        for i in range(n)
    ]
    ledger.clock.advance(microseconds=123_457)  # instants keep their microseconds
    out = created(ledger.append(items[: n // 2]))
    ledger.clock.advance(seconds=1, microseconds=1)
    return out + created(ledger.append(items[n // 2 :]))


# 1. Append and read back ---------------------------------------------------------------


def test_a_new_store_is_empty(ledger: Ledger) -> None:
    assert ledger.store.tree() == TreeState(0, EMPTY_ROOT)
    assert list(ledger.store.records()) == []
    assert ledger.store.max_notification_id() is None
    assert ledger.store.select_notifications(1, 10) == []
    assert ledger.store.tracked_position() == 0
    assert ledger.store.append([], event_for, ledger.clock) == []


def test_appended_records_chain_and_read_back_exactly(ledger: Ledger) -> None:
    first_batch_at = ledger.clock.now + timedelta(microseconds=123_457)
    appended = varied_ledger(ledger, 7)

    assert [r.sequence for r in appended] == list(range(1, 8))
    stored = list(ledger.store.records())
    assert stored == appended  # every field, instants to the microsecond, hashes, evidence
    assert verify_chain(stored).ok
    assert ledger.store.tree() == TreeState(7, root_of(leaves(stored)))
    assert list(ledger.store.leaf_hashes(7)) == leaves(stored)
    assert list(ledger.store.leaf_hashes(3)) == leaves(stored)[:3]
    assert list(ledger.store.records(5)) == appended[4:]
    assert ledger.store.find_record(appended[2].record_id) == appended[2]
    assert ledger.store.find_record("no-such-record") is None
    assert list(ledger.store.history(["cust-1", "cust-2"])) == [
        r for r in appended if r.subject_id in ("cust-1", "cust-2")
    ]
    # recorded_at is the store's clock, read once per batch.
    assert {r.recorded_at for r in appended[:3]} == {first_batch_at}
    assert {r.recorded_at for r in appended[3:]} == {ledger.clock.now}


def test_recorded_at_never_goes_back_along_the_ledger(ledger: Ledger) -> None:
    ledger.clock.advance(hours=1)
    [first] = created(ledger.append([consent("cust-1")]))
    ledger.clock.advance(minutes=-30)  # the clock steps back (NTP)
    [second] = created(ledger.append([consent("cust-1", effective_at=T0)]))
    assert second.recorded_at == first.recorded_at
    assert verify_chain(ledger.store.records()).ok


def test_an_idempotency_key_returns_the_first_answer_and_writes_nothing(ledger: Ledger) -> None:
    [first] = ledger.append([consent("cust-1", key="req-1")])
    assert first.created
    before = counts(ledger)

    ledger.clock.advance(minutes=5)
    again = ledger.append([consent("cust-1", key="req-1", decision=W)])

    assert again == [Appended(first.record, created=False)]
    assert counts(ledger) == before
    assert ledger.store.find_by_idempotency_key("req-1") == first.record
    assert ledger.store.find_by_idempotency_key("req-unknown") is None

    # Within one batch: a key repeated answers with the batch's first record for it.
    mixed = ledger.append(
        [
            consent("cust-2", key="req-2"),
            consent("cust-2", key="req-2", decision=W),
            consent("cust-2"),
            consent("cust-1", key="req-1"),
        ]
    )
    assert [m.created for m in mixed] == [True, False, True, False]
    assert mixed[1].record == mixed[0].record
    assert mixed[3].record == first.record
    assert [r.sequence for r in ledger.store.records()] == [1, 2, 3]
    assert verify_chain(ledger.store.records()).ok


def test_the_outbox_holds_one_notification_per_created_record(ledger: Ledger) -> None:
    records = created(
        ledger.append([consent("cust-1"), consent("cust-2", key="k"), consent("cust-2", key="k")])
    )
    records += created(ledger.append([consent("cust-3"), consent("cust-2", key="k")]))

    notes = ledger.store.select_notifications(1, 100)
    assert [(n.id, n.originator_id, n.originator_version, n.topic, n.state) for n in notes] == [
        (i, r.subject_id, r.sequence, f"consent.subject.{r.subject_id}", r.record_hash)
        for i, r in enumerate(records, start=1)
    ]
    assert ledger.store.max_notification_id() == 3
    # As the relay pages through it: from a position, a limit, a stop, topics.
    assert [n.id for n in ledger.store.select_notifications(2, 1)] == [2]
    assert [n.id for n in ledger.store.select_notifications(None, 10, stop=2)] == [1, 2]
    topics = ["consent.subject.cust-2", "consent.subject.cust-3"]
    assert [n.id for n in ledger.store.select_notifications(1, 10, topics=topics)] == [2, 3]
    assert ledger.store.select_notifications(4, 10) == []


def test_statements_are_published_once_with_their_event(ledger: Ledger) -> None:
    def publish(version: str, text: str = "We may email you.") -> Any:
        statement = publish_statement(
            "marketing-email", version, "marketing", "Marketing e-mail", text, ledger.clock()
        )
        ledger.store.publish_statement(
            statement, OutboxEvent("consent.statement.marketing-email", version.encode())
        )
        return statement

    v1 = publish("1.0")
    v10 = publish("1.10")
    v2 = publish("2.0")
    with pytest.raises(StatementVersionExists):
        publish("1.10", text="Changed text")
    assert [
        (n.id, n.originator_id, n.topic, n.state) for n in ledger.store.select_notifications(1, 10)
    ] == [
        (i, "marketing-email", "consent.statement.marketing-email", v)
        for i, v in enumerate([b"1.0", b"1.10", b"2.0"], start=1)
    ]  # the refused one wrote nothing

    assert ledger.store.get_statement("marketing-email", Version(1, 10)) == v10
    assert ledger.store.get_statement("marketing-email") == v2  # the latest
    assert ledger.store.get_statement("marketing-email", Version(3, 0)) is None
    assert ledger.store.get_statement("terms") is None
    assert ledger.store.list_statements("marketing-email") == [v1, v10, v2]
    assert ledger.store.list_statements() == [v1, v10, v2]
    assert ledger.store.latest_majors() == {"marketing-email": 2}

    # Outbox positions are shared by statements and records, in commit order.
    ledger.append([consent("cust-1")])
    assert [n.id for n in ledger.store.select_notifications(1, 10)] == [1, 2, 3, 4]


def test_opening_again_keeps_everything_and_continues_the_chain(ledger: Ledger) -> None:
    first = varied_ledger(ledger, 4)
    ledger.store.close()
    ledger.store = open_store(ledger.url, ledger.path)  # the schema step runs again

    [next_one] = created(ledger.append([consent("cust-1")]))
    assert next_one.sequence == 5
    assert next_one.prev_hash == first[-1].record_hash
    assert list(ledger.store.records()) == [*first, next_one]
    assert ledger.store.tree() == TreeState(5, root_of(leaves([*first, next_one])))


def test_several_stores_can_create_the_schema_at_once(
    database_url: str | None, tmp_path: Path
) -> None:
    path = tmp_path / "fresh.sqlite"
    start = threading.Barrier(4)

    def open_one(_: int) -> LedgerStore:
        start.wait()
        return open_store(database_url, path, pool_size=2)

    with ThreadPoolExecutor(4) as pool:
        stores = list(pool.map(open_one, range(4)))
    try:
        for i, store in enumerate(stores):
            store.append([consent(f"cust-{i}")], event_for, lambda: T0)
        assert [r.sequence for r in stores[0].records()] == [1, 2, 3, 4]
        assert verify_chain(stores[3].records()).ok
    finally:
        for store in stores:
            store.close()


# 2. Append-only, by the database -----------------------------------------------------------


def publish_terms(ledger: Ledger) -> None:
    statement = publish_statement("terms", "1.0", "service", "Terms", "The terms.", T0)
    ledger.store.publish_statement(statement, OutboxEvent("consent.statement.terms", b""))


def snapshot(ledger: Ledger) -> tuple[list[ConsentRecord], list[Any]]:
    return list(ledger.store.records()), ledger.store.list_statements()


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger SET channel = 'call-centre' WHERE sequence = 1",
        "UPDATE ledger SET decision = 'GRANTED'",
        "DELETE FROM ledger WHERE sequence = 2",
        "UPDATE statements SET title = 'Other terms'",
        "DELETE FROM statements WHERE statement_id = 'terms'",
    ],
)
def test_the_database_refuses_updates_and_deletes(ledger: Ledger, statement: str) -> None:
    publish_terms(ledger)
    varied_ledger(ledger, 2)
    before = snapshot(ledger)

    with pytest.raises(DB_ERRORS, match="append-only"):
        ledger.sql(statement)

    assert snapshot(ledger) == before


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger_head SET sequence = 3, tree_size = 3",  # a truncated ledger's head
        "UPDATE ledger_head SET record_hash = peaks",  # same length, another hash
        "UPDATE ledger_head SET outbox_position = 0",
        "DELETE FROM ledger_head",
        "REPLACE",
    ],
)
def test_the_ledger_head_only_moves_forward(ledger: Ledger, statement: str) -> None:
    varied_ledger(ledger)
    head = ledger.store.tree()
    if statement == "REPLACE":
        statement = (
            "INSERT OR REPLACE INTO ledger_head SELECT 1, 3, record_hash, 3, peaks,"
            " recorded_at, outbox_position FROM ledger_head"
            if ledger.backend == "sqlite"
            else "TRUNCATE ledger_head"
        )

    with pytest.raises(DB_ERRORS, match="refused"):
        ledger.sql(statement)

    assert ledger.store.tree() == head


@pytest.mark.parametrize("table", ["ledger", "statements"])
def test_the_database_refuses_an_insert_that_replaces_a_row(ledger: Ledger, table: str) -> None:
    publish_terms(ledger)
    varied_ledger(ledger, 2)
    before = snapshot(ledger)
    # SQLite's REPLACE deletes the row it replaces without firing DELETE triggers;
    # PostgreSQL's upsert updates it.
    change, key = {
        "ledger": ("subject_id = 'mallory'", "sequence"),
        "statements": ("body = 'Other text'", "statement_id, major, minor"),
    }[table]
    if ledger.backend == "postgres":
        statement = (
            f"INSERT INTO {table} SELECT * FROM {table} ON CONFLICT ({key}) DO UPDATE SET {change}"
        )
    else:
        statement = f"INSERT OR REPLACE INTO {table} SELECT * FROM {table}"

    with pytest.raises(DB_ERRORS, match="append-only"):
        ledger.sql(statement)

    assert snapshot(ledger) == before


@pytest.mark.parametrize("table", ["ledger", "statements"])
def test_the_database_refuses_emptying_a_table(ledger: Ledger, table: str) -> None:
    publish_terms(ledger)
    varied_ledger(ledger, 2)
    before = snapshot(ledger)
    # PostgreSQL's TRUNCATE skips row triggers; SQLite's equivalent is an unqualified DELETE
    # (its "truncate optimization", which row triggers switch off).
    wipe = f"TRUNCATE {table}" if ledger.backend == "postgres" else f"DELETE FROM {table}"

    with pytest.raises(DB_ERRORS, match="append-only"):
        ledger.sql(wipe)

    assert snapshot(ledger) == before


# 3. Tamper detection over what is stored --------------------------------------------------


def one_byte_changed(value: Any) -> Any:
    if isinstance(value, bytes):
        return value[:1] + bytes([value[1] ^ 0x01]) + value[2:]
    return chr(ord(value[0]) ^ 0x01) + value[1:]  # "2025-..." -> "3025-...", "GRANTED" -> "FRANTED"


@pytest.mark.parametrize(
    "change",
    [
        "UPDATE timeline SET decision = 'GRANTED' WHERE sequence = 4",
        "UPDATE timeline SET subject_id = 'mallory' WHERE sequence = 4",
        "DELETE FROM timeline WHERE sequence = 4",
        "INSERT INTO timeline SELECT 99, subject_id, statement_id, effective_at, recorded_at,"
        " decision, version, record_id FROM timeline WHERE sequence = 5",
    ],
)
def test_a_timeline_that_does_not_follow_the_ledger_fails_verification(
    ledger: Ledger, change: str
) -> None:
    """State and export read the timeline: a change there would alter their answers
    with the chain intact."""
    varied_ledger(ledger)
    app = ConsentApplication(ledger.store, Ed25519PrivateKey.generate())
    assert app.verify().ok

    ledger.sql(change)
    verdict = app.verify()

    assert (verdict.ok, verdict.reason) == (False, "timeline_mismatch")
    assert verdict.first_bad_sequence == (99 if change.startswith("INSERT") else 4)
    ledger.store.rebuild_timeline()
    assert app.verify().ok


@pytest.mark.parametrize(
    ("column", "reason"),
    [
        ("evidence", "record_hash_mismatch"),
        ("subject_id", "record_hash_mismatch"),
        ("version", "record_hash_mismatch"),  # "2.1" -> "3.1"
        ("effective_at", "record_hash_mismatch"),
        ("recorded_at", "record_hash_mismatch"),
        ("decision", "unreadable_record"),  # no longer a decision at all
        ("prev_hash", "prev_hash_mismatch"),
        ("record_hash", "record_hash_mismatch"),
    ],
)
def test_a_changed_byte_is_reported_at_its_record(ledger: Ledger, column: str, reason: str) -> None:
    varied_ledger(ledger)
    assert verify_chain(ledger.store.records()).ok
    [(value,)] = ledger.sql(f"SELECT {column} FROM ledger WHERE sequence = 4")

    with ledger.triggers_disabled("ledger"):
        ledger.sql(f"UPDATE ledger SET {column} = ? WHERE sequence = 4", [one_byte_changed(value)])

    verdict = verify_chain(ledger.store.records())
    assert (verdict.ok, verdict.first_bad_sequence, verdict.reason) == (False, 4, reason)
    assert verdict.records_checked == 3
    # The triggers are back: the tampered row cannot even be put right through SQL.
    with pytest.raises(DB_ERRORS, match="append-only"):
        ledger.sql(f"UPDATE ledger SET {column} = ? WHERE sequence = 4", [value])


def test_a_deleted_record_is_reported_at_its_sequence(ledger: Ledger) -> None:
    varied_ledger(ledger)

    with ledger.triggers_disabled("ledger"):
        ledger.sql("DELETE FROM ledger WHERE sequence = 3")

    verdict = verify_chain(ledger.store.records())
    assert (verdict.ok, verdict.first_bad_sequence, verdict.reason) == (
        False,
        3,
        "sequence_mismatch",
    )


def test_two_swapped_records_are_reported_at_the_first(ledger: Ledger) -> None:
    varied_ledger(ledger)
    columns = RECORD_COLUMNS.split(", ")
    [row3] = ledger.sql(f"SELECT {RECORD_COLUMNS} FROM ledger WHERE sequence = 3")
    [row5] = ledger.sql(f"SELECT {RECORD_COLUMNS} FROM ledger WHERE sequence = 5")
    insert = f"INSERT INTO ledger ({RECORD_COLUMNS}) VALUES ({', '.join('?' for _ in columns)})"

    with ledger.triggers_disabled("ledger"):
        ledger.sql("DELETE FROM ledger WHERE sequence IN (3, 5)")
        ledger.sql(insert, [3, *row5[1:]])  # each keeps its place, takes the other's content
        ledger.sql(insert, [5, *row3[1:]])

    stored = list(ledger.store.records())
    assert [r.sequence for r in stored] == [1, 2, 3, 4, 5, 6]
    verdict = verify_chain(stored)
    assert (verdict.ok, verdict.first_bad_sequence) == (False, 3)


# 4. Point in time --------------------------------------------------------------------------

SIX_HOURS = timedelta(hours=6)
ENTRY = st.tuples(
    st.sampled_from(STATEMENTS),
    st.sampled_from([G, W]),
    st.sampled_from(["1.0", "1.1", "2.0"]),
    st.integers(0, 40),  # effective slot, 6 h apart (a coarse grid: ties happen)
    st.integers(0, 999_999),  # microseconds, so instants round-trip to the microsecond
    st.booleans(),  # starts a new batch (a later recorded_at) or joins the current one
)
EPOCH = [T0]  # each example records in a later 30-day window of the store's clock


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_state_equals_the_fold_of_the_ledger(ledger: Ledger, data: st.DataObject) -> None:
    subject = f"cust-{uuid.uuid4().hex[:8]}"
    base = EPOCH[0] = EPOCH[0] + timedelta(days=30)
    ledger.clock.now = base + 41 * SIX_HOURS  # every effective time is before it
    specs = data.draw(st.lists(ENTRY, min_size=1, max_size=24))
    records: list[ConsentRecord] = []
    batch: list[Any] = []
    for i, (statement, decision, version, slot, micros, new_batch) in enumerate(specs):
        if new_batch and batch:
            records += created(ledger.append(batch))
            batch = []
            ledger.clock.advance(minutes=data.draw(st.integers(0, 90)))  # 0: same instant
        effective = base + slot * SIX_HOURS + timedelta(microseconds=micros)
        batch.append(
            consent(
                subject,
                statement_id=statement,
                decision=decision,
                version=version,
                effective_at=effective,
                key=f"{subject}-{i}",
            )
        )
    records += created(ledger.append(batch))

    # Query at the records' own instants, a microsecond either side, and beyond.
    marks = {t for r in records for t in (r.effective_at, r.recorded_at)}
    marks |= {
        t + d for t in set(marks) for d in (timedelta(microseconds=1), -timedelta(microseconds=1))
    }
    marks |= {base - timedelta(days=1), base + timedelta(days=400)}
    instants = st.sampled_from(sorted(marks))
    for at, known in data.draw(st.lists(st.tuples(instants, st.none() | instants), max_size=12)):
        expected = state_at(records, {}, at, known)
        assert ledger.store.state(subject, at, known) == expected, (at, known)


def test_state_of_a_subject_with_10000_records(ledger: Ledger) -> None:
    rng = random.Random(20250401)
    records: list[ConsentRecord] = []
    ledger.clock.now = T0 + timedelta(days=365)
    started = time.perf_counter()
    for _ in range(20):
        ledger.clock.advance(hours=7, microseconds=rng.randrange(10**6))
        batch = [
            consent(
                "big",
                statement_id=rng.choice(STATEMENTS),
                decision=rng.choice([G, W]),
                effective_at=ledger.clock.now - timedelta(seconds=rng.randrange(300 * 86400)),
            )
            for _ in range(500)
        ]
        records += created(ledger.append(batch))
    appended_in = time.perf_counter() - started
    ledger.append([consent("small", effective_at=T0)])  # a neighbour in the index

    timings = []
    for _ in range(200):
        at = T0 + timedelta(seconds=rng.randrange(400 * 86400))
        known = None if rng.random() < 0.5 else at + timedelta(days=rng.randrange(-30, 60))
        started = time.perf_counter()
        got = ledger.store.state("big", at, known)
        timings.append(time.perf_counter() - started)
        assert got == state_at(records, {}, at, known), (at, known)
    timings.sort()
    print(
        f"\n[{ledger.backend}] 10,000 appends in 20 batches: {len(records) / appended_in:,.0f}"
        f" records/s; state() over 10,000 records: p50 {timings[100] * 1e3:.2f} ms,"
        f" p99 {timings[197] * 1e3:.2f} ms"
    )


def test_export_streams_every_subjects_state_in_order(ledger: Ledger) -> None:
    rng = random.Random(3)
    subjects = [f"cust-{n:02d}" for n in rng.sample(range(100), 12)]
    ledger.clock.now = T0 + timedelta(days=100)
    for _ in range(5):
        ledger.clock.advance(hours=1)
        ledger.append(
            [
                consent(
                    rng.choice(subjects),
                    statement_id=rng.choice(STATEMENTS),
                    decision=rng.choice([G, W]),
                    effective_at=T0 + timedelta(days=rng.randrange(100)),
                )
                for _ in range(30)
            ]
        )
    records = list(ledger.store.records())

    for at, known, statement in [
        (T0 + timedelta(days=50), None, None),
        (T0 + timedelta(days=200), None, None),
        (T0 + timedelta(days=70), T0 + timedelta(days=100, hours=3), None),
        (T0 + timedelta(days=80), None, "privacy"),
        (T0 - timedelta(days=1), None, None),
    ]:
        expected = [
            (subject, sid, entry)
            for subject in sorted(subjects)
            for sid, entry in sorted(
                state_at([r for r in records if r.subject_id == subject], {}, at, known).items()
            )
            if statement in (None, sid)
        ]
        assert list(ledger.store.export_state(at, known, statement)) == expected


# 5. Concurrency ------------------------------------------------------------------------------


def test_concurrent_batches_form_one_gapless_chain(ledger: Ledger) -> None:
    threads, batches, size = 8, 10, 25
    start = threading.Barrier(threads)
    # Half the threads write through a second store on the same database, as a second
    # process or replica would: only the database's lock serializes those two.
    replica = open_store(ledger.url, ledger.path)
    stores = [ledger.store, replica]

    def work(t: int) -> list[list[Appended]]:
        start.wait()
        return [
            stores[t % 2].append(
                [
                    consent(f"cust-{t}", statement_id=STATEMENTS[i % 3], key=f"{t}.{b}.{i}")
                    for i in range(size)
                ],
                event_for,
                ledger.clock,
            )
            for b in range(batches)
        ]

    began = time.perf_counter()
    try:
        with ThreadPoolExecutor(threads) as pool:
            results = list(pool.map(work, range(threads)))
    finally:
        replica.close()
    elapsed = time.perf_counter() - began
    total = threads * batches * size

    stored = list(ledger.store.records())
    assert [r.sequence for r in stored] == list(range(1, total + 1))
    verdict = verify_chain(stored)
    assert verdict.ok
    assert verdict.records_checked == total
    assert ledger.store.tree() == TreeState(total, verdict.root_hash)
    answered = sorted(
        (a.record for per in results for b in per for a in b), key=lambda r: r.sequence
    )
    assert answered == stored  # every caller got exactly what was stored
    for batch in (b for per in results for b in per):
        # A batch is one transaction: its records are consecutive, nobody else's in between.
        sequences = [a.record.sequence for a in batch]
        assert all(a.created for a in batch)
        assert sequences == list(range(sequences[0], sequences[0] + size))
    notes = ledger.store.select_notifications(1, total + 1)
    assert [n.id for n in notes] == list(range(1, total + 1))
    assert [n.originator_version for n in notes] == list(range(1, total + 1))
    assert len(ledger.store.timeline_rows()) == total
    print(
        f"\n[{ledger.backend}] {threads} threads x {batches} batches x {size}: "
        f"{total / elapsed:,.0f} records/s, {threads * batches / elapsed:,.0f} commits/s"
    )


# 6. Merges and erasures ------------------------------------------------------------------------


def append_for(ledger: Ledger, subject: str, n: int, day: int = 0) -> list[ConsentRecord]:
    ledger.clock.advance(minutes=1)
    return created(
        ledger.append(
            [
                consent(
                    subject,
                    statement_id=STATEMENTS[i % 3],
                    decision=G if (i + day) % 2 == 0 else W,
                    effective_at=T0 + timedelta(days=day + i),
                )
                for i in range(n)
            ]
        )
    )


def test_after_a_merge_the_survivor_answers_for_both(ledger: Ledger) -> None:
    survivor = append_for(ledger, "survivor", 3, day=0)
    merged = append_for(ledger, "merged", 4, day=1)
    append_for(ledger, "bystander", 2)

    assert ledger.store.apply_merge("merged", "survivor", position=10)

    assert ledger.store.canonical_subject("merged") == "survivor"
    assert ledger.store.merged_ids("survivor") == ["merged"]
    assert ledger.store.tracked_position() == 10
    for day in (0, 1, 2, 3, 10):
        at = T0 + timedelta(days=day, hours=12)
        assert ledger.store.state("survivor", at, None) == state_at(survivor + merged, {}, at)
        assert ledger.store.state("merged", at, None) == {}
    # A record appended under the merged id (resolved just before the merge) still lands
    # on the survivor's timeline.
    late = append_for(ledger, "merged", 1, day=20)
    at = T0 + timedelta(days=25)
    assert ledger.store.state("survivor", at, None) == state_at(survivor + merged + late, {}, at)
    # The ledger itself is never rewritten.
    assert list(ledger.store.history(["merged"])) == merged + late
    assert verify_chain(ledger.store.records()).ok


def test_canonical_subject_follows_a_chain_of_merges(ledger: Ledger) -> None:
    a, b, c = (append_for(ledger, s, 2, day=i) for i, s in enumerate("abc"))

    assert ledger.store.apply_merge("a", "b", position=1)
    assert ledger.store.apply_merge("b", "c", position=2)
    # The other way round too: the survivor was itself merged before.
    assert ledger.store.apply_merge("e", "f", position=3)
    assert ledger.store.apply_merge("d", "e", position=4)

    assert [ledger.store.canonical_subject(s) for s in "abcdef"] == list("cccfff")
    assert ledger.store.merged_ids("c") == ["a", "b"]
    assert ledger.store.merged_ids("b") == []
    assert ledger.store.merged_ids("f") == ["d", "e"]
    at = T0 + timedelta(days=10)
    assert ledger.store.state("c", at, None) == state_at(a + b + c, {}, at)
    assert {row[1] for row in ledger.store.timeline_rows()} == {"c"}


def test_identity_events_apply_once_by_position(ledger: Ledger) -> None:
    append_for(ledger, "a", 2)
    append_for(ledger, "b", 2)
    assert ledger.store.apply_merge("a", "b", position=5) is True
    rows = ledger.store.timeline_rows()
    key = ledger.store.subject_key("b", create=True)

    # Redelivered, or anything at or before the tracked position: no effect at all.
    assert ledger.store.apply_merge("a", "b", position=5) is False
    assert ledger.store.apply_merge("b", "a", position=5) is False
    assert ledger.store.apply_merge("b", "a", position=4) is False
    assert ledger.store.apply_erasure("b", position=5) is False
    assert ledger.store.canonical_subject("b") == "b"
    assert ledger.store.canonical_subject("a") == "b"
    assert ledger.store.timeline_rows() == rows
    assert ledger.store.subject_key("b", create=False) == key
    assert not ledger.store.is_erased("b")
    assert ledger.store.tracked_position() == 5

    assert ledger.store.apply_erasure("b", position=6) is True
    assert ledger.store.apply_erasure("b", position=6) is False
    assert ledger.store.tracked_position() == 6


def test_append_resolving_files_each_request_under_its_canonical_subject(
    ledger: Ledger,
) -> None:
    given: dict[int, SubjectKey] = {}

    def build(i: int, subject: SubjectKey) -> NewConsent:
        given[i] = subject
        return consent(subject.subject_id)

    assert ledger.store.append_resolving([], build, event_for, ledger.clock) == []
    known = ledger.store.subject_key("known", create=True)
    assert ledger.store.apply_merge("a", "b", position=1)
    assert ledger.store.apply_merge("b", "c", position=2)
    assert ledger.store.apply_erasure("gone", position=3)
    assert ledger.store.apply_merge("old-gone", "gone", position=4)
    assert ledger.store.apply_erasure("x", position=5)  # its key is shredded...
    ids = ["new", "a", "known", "gone", "old-gone", "c", "new", "x"]

    answers = ledger.store.append_resolving(ids, build, event_for, ledger.clock)

    assert [isinstance(a, SubjectErased) for a in answers] == [
        False, False, False, True, True, False, False, True
    ]  # fmt: skip
    assert sorted(given) == [0, 1, 2, 5, 6]  # nothing built for an erased subject
    assert [given[i].subject_id for i in sorted(given)] == ["new", "c", "known", "c", "new"]
    assert [a.record.subject_id for a in answers if isinstance(a, Appended)] == [
        given[i].subject_id for i in sorted(given)
    ]
    assert given[2].key == known
    # Keys made where missing, once per canonical subject, and kept.
    for i, subject in ((0, "new"), (1, "c")):
        key = given[i].key
        assert key is not None
        assert len(key) == 32
        assert ledger.store.subject_key(subject, create=False) == key
    assert given[6].key == given[0].key
    assert given[5].key == given[1].key
    assert ledger.store.subject_key("a", create=False) is None  # only the survivor's
    # None created for erased subjects.
    assert ledger.store.subject_key("gone", create=False) is None
    assert ledger.store.subject_key("x", create=False) is None
    assert len(list(ledger.store.records())) == 5


def test_erasure_shreds_the_keys_and_the_ledger_still_verifies(ledger: Ledger) -> None:
    keys = {s: ledger.store.subject_key(s, create=True) for s in ("s", "m", "other")}
    assert all(k is not None and len(k) == 32 for k in keys.values())
    assert len(set(keys.values())) == 3
    assert ledger.store.subject_key("s", create=True) == keys["s"]  # created once
    assert ledger.store.subject_key("never-seen", create=False) is None
    append_for(ledger, "s", 3)
    append_for(ledger, "m", 2)
    assert ledger.store.apply_merge("m", "s", position=1)
    before = list(ledger.store.records()), ledger.store.tree()

    assert ledger.store.apply_erasure("s", position=2)

    assert ledger.store.is_erased("s")
    assert not ledger.store.is_erased("other")
    assert ledger.store.subject_key("s", create=False) is None
    assert ledger.store.subject_key("s", create=True) is None  # never a new key
    assert ledger.store.subject_key("m", create=True) is None  # merged into the erased one
    assert ledger.store.subject_key("other", create=False) == keys["other"]
    assert (list(ledger.store.records()), ledger.store.tree()) == before
    assert verify_chain(ledger.store.records()).ok


# 7. The timeline is derived data --------------------------------------------------------------


def test_the_rebuilt_timeline_equals_the_live_one(ledger: Ledger) -> None:
    for day, subject in enumerate(["a", "b", "c", "d", "a", "b"]):
        append_for(ledger, subject, 3, day=day)
    assert ledger.store.apply_merge("a", "b", position=1)
    append_for(ledger, "a", 2, day=9)  # after the merge, under the merged id
    assert ledger.store.apply_merge("b", "c", position=2)
    append_for(ledger, "c", 1)
    live = ledger.store.timeline_rows()
    assert len(live) == 21
    assert {row[1] for row in live} == {"c", "d"}

    ledger.store.rebuild_timeline()
    assert ledger.store.timeline_rows() == live

    # A rebuild really recomputes: it restores a damaged timeline to the live rows.
    ledger.sql("DELETE FROM timeline WHERE sequence > 15")
    ledger.sql("UPDATE timeline SET subject_id = 'someone-else', decision = 'WITHDRAWN'")
    assert ledger.store.timeline_rows() != live
    ledger.store.rebuild_timeline()
    assert ledger.store.timeline_rows() == live


def test_a_consent_without_effective_at_takes_the_time_it_is_recorded(ledger: Ledger) -> None:
    """Even when the clock steps back between the check and the append (an NTP step):
    a time taken at the check would then lie after the record's, and be refused."""
    publish_terms(ledger)
    t1 = T0 + timedelta(days=30)
    readings = iter([t1, t1 - timedelta(milliseconds=5)])
    app = ConsentApplication(
        ledger.store, Ed25519PrivateKey.generate(), clock=lambda: next(readings)
    )
    request = ConsentRequest(
        "bob", "terms", "1.0", Decision.GRANTED, None, "web", "", Evidence(), None
    )

    [answer] = app.record([app.check(request)])

    assert isinstance(answer, Appended), answer
    assert answer.record.effective_at == answer.record.recorded_at
