"""Point-in-time state: the issue's auditor scenario, the winner rule's edges, OUTDATED,
and the SQL ordering storage will use."""

from __future__ import annotations

import itertools
import sqlite3
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kizuna_consent.domain.instants import NaiveDatetime, canonical_instant
from kizuna_consent.domain.records import GENESIS, ConsentRecord, Decision
from kizuna_consent.domain.state import (
    WINNER_ORDER_SQL,
    ConsentStatus,
    Entry,
    fold_one,
    resolve,
    state_at,
    winner_key,
)
from kizuna_consent.domain.statements import Version
from tests.unit.consent.builders import record_after

G, W = Decision.GRANTED, Decision.WITHDRAWN


def d(day: str) -> datetime:
    return datetime.fromisoformat(day).replace(tzinfo=UTC)


def ledger(*specs: tuple[str, str, Decision, str, str]) -> list[ConsentRecord]:
    """(statement, version, decision, effective day, recorded day) in ledger order."""
    out: list[ConsentRecord] = []
    head = GENESIS
    for i, (sid, version, decision, effective, recorded) in enumerate(specs):
        r = record_after(
            head,
            i,
            statement_id=sid,
            version=version,
            decision=decision,
            effective_at=d(effective),
            recorded_at=d(recorded),
        )
        out.append(r)
        head = r.head
    return out


def status(
    records: list[ConsentRecord],
    at: str,
    known: str | None = None,
    majors: dict[str, int] | None = None,
    sid: str = "marketing-email",
) -> ConsentStatus | None:
    state = state_at(records, majors or {}, d(at), None if known is None else d(known))
    return state[sid].status if sid in state else None


# The acceptance scenario of issue 3 (recorded "today" = 2025-05-01).
AUDIT = ledger(
    ("marketing-email", "1.0", G, "2025-01-10", "2025-05-01"),
    ("marketing-email", "1.0", W, "2025-03-01", "2025-05-01T00:01"),
)


@pytest.mark.parametrize(
    ("at", "known", "expected"),
    [
        ("2025-02-01", None, ConsentStatus.GRANTED),
        ("2025-04-01", None, ConsentStatus.WITHDRAWN),
        ("2025-02-01", "2024-12-31", None),  # not known yet: absent, the service says NOT_GIVEN
        ("2025-01-09", None, None),
        ("2025-01-10", None, ConsentStatus.GRANTED),  # effective_at == at counts
        ("2025-03-01", None, ConsentStatus.WITHDRAWN),
        ("2025-04-01", "2025-05-01", ConsentStatus.GRANTED),  # withdrawal not recorded yet
        ("2025-04-01", "2025-05-01T00:01", ConsentStatus.WITHDRAWN),  # recorded_at == known
    ],
)
def test_auditor_scenario(at: str, known: str | None, expected: ConsentStatus | None) -> None:
    assert status(AUDIT, at, known) == expected


def test_entry_carries_the_winning_record() -> None:
    entry = state_at(AUDIT, {}, d("2025-02-01"))["marketing-email"]
    first = AUDIT[0]
    assert entry == Entry(
        ConsentStatus.GRANTED,
        Version(1, 0),
        first.effective_at,
        first.recorded_at,
        first.record_id,
        first.sequence,
    )


def test_a_late_record_with_an_earlier_effective_time_does_not_override() -> None:
    records = ledger(
        ("terms", "1.0", G, "2025-03-01", "2025-03-01"),
        ("terms", "1.0", W, "2025-02-01", "2025-04-01"),  # a paper withdrawal, filed late
    )
    assert status(records, "2025-05-01", sid="terms") == ConsentStatus.GRANTED
    assert status(records, "2025-02-15", sid="terms") == ConsentStatus.WITHDRAWN
    # ...but before we learned of it, Feb 15 showed nothing at all.
    assert status(records, "2025-02-15", "2025-03-31", sid="terms") is None


def test_same_effective_time_later_recorded_wins() -> None:
    records = ledger(
        ("terms", "1.0", W, "2025-02-01", "2025-02-05"),
        ("terms", "1.0", G, "2025-02-01", "2025-02-03"),  # recorded earlier, sequenced later
    )
    assert status(records, "2025-03-01", sid="terms") == ConsentStatus.WITHDRAWN


def test_same_effective_and_recorded_time_later_sequence_wins() -> None:
    records = ledger(
        ("terms", "1.0", W, "2025-02-01", "2025-02-05"),
        ("terms", "1.0", G, "2025-02-01", "2025-02-05"),
    )
    assert status(records, "2025-03-01", sid="terms") == ConsentStatus.GRANTED


@pytest.mark.parametrize(
    ("version", "decision", "latest", "expected"),
    [
        ("1.0", G, 2, ConsentStatus.OUTDATED),
        ("1.4", G, 1, ConsentStatus.GRANTED),  # a MINOR change keeps it valid
        ("2.0", G, 2, ConsentStatus.GRANTED),
        ("1.0", W, 2, ConsentStatus.WITHDRAWN),  # a withdrawal is never "outdated"
        ("1.0", G, None, ConsentStatus.GRANTED),
    ],
)
def test_outdated(
    version: str, decision: Decision, latest: int | None, expected: ConsentStatus
) -> None:
    records = ledger(("terms", version, decision, "2025-01-01", "2025-01-01"))
    majors = {} if latest is None else {"terms": latest}
    assert status(records, "2025-02-01", majors=majors, sid="terms") == expected


def test_statements_are_independent() -> None:
    records = ledger(
        ("terms", "1.0", G, "2025-01-01", "2025-01-01"),
        ("privacy", "1.0", G, "2025-01-02", "2025-01-02"),
        ("privacy", "1.0", W, "2025-01-03", "2025-01-03"),
    )
    state = state_at(records, {}, d("2025-02-01"))
    assert {k: v.status for k, v in state.items()} == {
        "terms": ConsentStatus.GRANTED,
        "privacy": ConsentStatus.WITHDRAWN,
    }


def test_a_merged_subjects_records_fold_together() -> None:
    head = GENESIS
    survivor = record_after(
        head, 0, subject_id="cust-a", effective_at=d("2025-01-01"), recorded_at=d("2025-01-01")
    )
    merged = record_after(
        survivor.head,
        1,
        subject_id="cust-b",
        decision=W,
        effective_at=d("2025-01-05"),
        recorded_at=d("2025-01-05"),
    )
    assert (
        state_at([survivor, merged], {}, d("2025-02-01"))["terms"].status == ConsentStatus.WITHDRAWN
    )


def test_times_must_be_aware() -> None:
    with pytest.raises(NaiveDatetime, match="at must carry"):
        state_at(AUDIT, {}, datetime(2025, 1, 1))
    with pytest.raises(NaiveDatetime, match="as_known_at"):
        state_at(AUDIT, {}, d("2025-01-01"), datetime(2025, 1, 1))


def test_fold_one_is_order_independent() -> None:
    records = ledger(
        ("terms", "1.0", G, "2025-01-03", "2025-01-04"),
        ("terms", "1.1", W, "2025-01-03", "2025-01-04"),
        ("terms", "1.2", G, "2025-01-02", "2025-01-09"),
        ("terms", "2.0", W, "2025-01-01", "2025-01-10"),
    )
    results = set()
    for order in itertools.permutations(records):
        entry: Entry | None = None
        for r in order:
            entry = fold_one(entry, r)
        assert entry is not None
        results.add(entry.record_id)
    assert results == {records[1].record_id}


def test_resolve_only_touches_outdated_grants() -> None:
    entry = fold_one(None, ledger(("terms", "1.0", G, "2025-01-01", "2025-01-01"))[0])
    assert resolve(entry, 1) is entry
    assert resolve(entry, 2).status == ConsentStatus.OUTDATED
    assert resolve(entry, 2).record_id == entry.record_id


T0 = datetime(2025, 1, 1, tzinfo=UTC)


@settings(max_examples=60)
@given(
    st.lists(
        st.tuples(st.integers(0, 5), st.integers(0, 3)),  # (effective day, recorded delta)
        min_size=1,
        max_size=25,
    )
)
def test_winner_order_sql_picks_the_same_winner(rows: list[tuple[int, int]]) -> None:
    """Storage answers from SQL with WINNER_ORDER_SQL over canonical instant strings."""
    records = []
    head = GENESIS
    recorded = T0 + timedelta(days=10)
    for i, (eff_day, rec_delta) in enumerate(rows):
        recorded += timedelta(hours=rec_delta)  # non-decreasing, often equal
        r = record_after(head, i, effective_at=T0 + timedelta(days=eff_day), recorded_at=recorded)
        records.append(r)
        head = r.head
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE r (effective_at TEXT, recorded_at TEXT, sequence INTEGER)")
    db.executemany(
        "INSERT INTO r VALUES (?, ?, ?)",
        [
            (canonical_instant(r.effective_at), canonical_instant(r.recorded_at), r.sequence)
            for r in records
        ],
    )
    (sql_winner,) = db.execute(
        f"SELECT sequence FROM r ORDER BY {WINNER_ORDER_SQL} LIMIT 1"
    ).fetchone()
    db.close()
    assert sql_winner == max(records, key=winner_key).sequence
