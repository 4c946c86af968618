"""Guarantee 4: the consent state at (at, as_known_at) equals a naive fold of the ledger.

Random grants and withdrawals over several subjects and statements; recorded_at never
decreases along the ledger (it often repeats), effective_at is a random earlier time (so
records arrive late and out of effective order, with many exact ties). The oracle below is
written from the rule's text, independently of `state`: filter, sort, take the last.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from kizuna_consent.domain.records import GENESIS, ConsentRecord, Decision, next_record
from kizuna_consent.domain.state import Entry, fold_one, resolve, state_at
from kizuna_consent.domain.statements import Version

SUBJECTS = ["cust-a", "cust-b", "cust-c"]
STATEMENTS = ["terms", "privacy", "marketing-email"]
VERSIONS = [Version(1, 0), Version(1, 1), Version(2, 0), Version(3, 0)]
T0 = datetime(2025, 1, 1, tzinfo=UTC)
RECORDING_STARTS = T0 + timedelta(days=60)  # every effective time below is before this
HOUR = timedelta(hours=1)


@dataclass(frozen=True)
class Spec:
    subject: int
    statement: int
    granted: bool
    version: int
    effective_slot: int  # effective_at = T0 + slot * 36h: a coarse grid, so ties happen
    recorded_step: int  # minutes after the previous record; 0 = the same instant


SPECS = st.builds(
    Spec,
    st.integers(0, len(SUBJECTS) - 1),
    st.integers(0, len(STATEMENTS) - 1),
    st.booleans(),
    st.integers(0, len(VERSIONS) - 1),
    st.integers(0, 39),
    st.integers(0, 3),
)


def build(specs: list[Spec]) -> list[ConsentRecord]:
    records: list[ConsentRecord] = []
    head = GENESIS
    recorded = RECORDING_STARTS
    for i, s in enumerate(specs):
        recorded += timedelta(minutes=s.recorded_step)
        record = next_record(
            head,
            record_id=f"r{i}",
            subject_id=SUBJECTS[s.subject],
            statement_id=STATEMENTS[s.statement],
            version=VERSIONS[s.version],
            decision=Decision.GRANTED if s.granted else Decision.WITHDRAWN,
            effective_at=T0 + s.effective_slot * 36 * HOUR,
            recorded_at=recorded,
            channel="store",
            site_id="shop",
            evidence=b"",
        )
        records.append(record)
        head = record.head
    return records


def oracle(
    records: list[ConsentRecord],
    subject: str,
    majors: dict[str, int],
    at: datetime,
    known: datetime | None,
) -> dict[str, tuple[str, str, datetime, datetime, str]]:
    """The rule, naively: keep what applied at `at` and was known at `known`; per statement
    sort by (effective, recorded, ledger position) and the last one is the state."""
    visible = [
        r
        for r in records
        if r.subject_id == subject
        and r.effective_at <= at
        and (known is None or r.recorded_at <= known)
    ]
    answer = {}
    for sid in {r.statement_id for r in visible}:
        ordered = sorted(
            (r for r in visible if r.statement_id == sid),
            key=lambda r: (r.effective_at, r.recorded_at, r.sequence),
        )
        last = ordered[-1]
        if last.decision == Decision.WITHDRAWN:
            status = "WITHDRAWN"
        elif sid in majors and last.version.major < majors[sid]:
            status = "OUTDATED"
        else:
            status = "GRANTED"
        answer[sid] = (
            status,
            str(last.version),
            last.effective_at,
            last.recorded_at,
            last.record_id,
        )
    return answer


def flat(state: dict[str, Entry]) -> dict[str, tuple[str, str, datetime, datetime, str]]:
    return {
        sid: (e.status.value, str(e.version), e.effective_at, e.recorded_at, e.record_id)
        for sid, e in state.items()
    }


@st.composite
def instant(draw: st.DrawFn, records: list[ConsentRecord], recorded: bool) -> datetime:
    """Either exactly a record's time (the <= boundaries) or any minute around them."""
    if draw(st.booleans()):
        r = draw(st.sampled_from(records))
        return r.recorded_at if recorded else r.effective_at
    start = RECORDING_STARTS if recorded else T0
    return start + timedelta(minutes=draw(st.integers(-60, 60 * 24 * 61)))


MAJORS = st.dictionaries(st.sampled_from(STATEMENTS), st.integers(1, 3))


@settings(max_examples=300, deadline=None)
@given(st.lists(SPECS, min_size=1, max_size=40), MAJORS, st.data())
def test_state_at_equals_the_naive_fold(
    specs: list[Spec], majors: dict[str, int], data: st.DataObject
) -> None:
    records = build(specs)
    at = data.draw(instant(records, recorded=False), label="at")
    known = data.draw(st.none() | instant(records, recorded=True), label="as_known_at")
    for subject in SUBJECTS:
        mine = [r for r in records if r.subject_id == subject]
        shuffled = data.draw(st.permutations(mine), label=f"{subject} arrival order")
        expected = oracle(records, subject, majors, at, known)
        assert flat(state_at(mine, majors, at, known)) == expected
        assert flat(state_at(shuffled, majors, at, known)) == expected


@settings(max_examples=150, deadline=None)
@given(st.lists(SPECS, min_size=1, max_size=40), MAJORS)
def test_an_incremental_index_equals_the_fold_of_everything(
    specs: list[Spec], majors: dict[str, int]
) -> None:
    """What a live index does: fold_one each record as it is appended, resolve on read."""
    records = build(specs)
    index: dict[tuple[str, str], Entry] = {}
    for r in records:
        key = (r.subject_id, r.statement_id)
        index[key] = fold_one(index.get(key), r)
    now = records[-1].recorded_at
    for subject in SUBJECTS:
        live = {
            sid: resolve(entry, majors.get(sid))
            for (subj, sid), entry in index.items()
            if subj == subject
        }
        assert flat(live) == oracle(records, subject, majors, now, None)
