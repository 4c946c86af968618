"""Point-in-time consent state: the fold of the ledger on two timelines.

*Effective* time is when a consent applied (a paper form signed last week); *recorded* time
is when the ledger learned it. "State at T as known at K" folds exactly the records with
effective_at <= T and recorded_at <= K. Per statement the winner is the record with the
greatest (effective_at, recorded_at, sequence): a late-arriving record with an earlier
effective time never overrides a later-effective one, and ties fall to the later record.
Storage mirrors the rule with `WINNER_ORDER_SQL`.

OUTDATED is judged against whatever latest MAJOR per statement the caller passes. The
service passes the latest MAJOR published *now* (simple, and what a customer-facing
"must re-consent?" question needs); `statements.latest_majors(..., as_of=T)` gives the
historical reading instead. A statement never consented to is absent from the result;
the service shows NOT_GIVEN for the statements it knows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from kizuna_consent.domain.instants import to_utc
from kizuna_consent.domain.records import ConsentRecord, Decision
from kizuna_consent.domain.statements import Version, is_outdated

# The winner is the first row of this order; keep it in step with `winner_key`.
WINNER_ORDER_SQL = "effective_at DESC, recorded_at DESC, sequence DESC"


class ConsentStatus(StrEnum):
    NOT_GIVEN = "NOT_GIVEN"
    GRANTED = "GRANTED"
    WITHDRAWN = "WITHDRAWN"
    OUTDATED = "OUTDATED"


@dataclass(frozen=True, slots=True)
class Entry:
    """One statement's state for a subject, and the record it comes from."""

    status: ConsentStatus
    version: Version
    effective_at: datetime
    recorded_at: datetime
    record_id: str
    sequence: int


class Ranked(Protocol):
    @property
    def effective_at(self) -> datetime: ...

    @property
    def recorded_at(self) -> datetime: ...

    @property
    def sequence(self) -> int: ...


def winner_key(item: Ranked) -> tuple[datetime, datetime, int]:
    """The greater key wins: effective time first, then recorded time, then ledger order."""
    return (item.effective_at, item.recorded_at, item.sequence)


def is_visible(record: ConsentRecord, at: datetime, as_known_at: datetime | None) -> bool:
    """Did this record apply at `at`, as the ledger knew things at `as_known_at`?"""
    return record.effective_at <= at and (as_known_at is None or record.recorded_at <= as_known_at)


def entry_of(record: ConsentRecord) -> Entry:
    status = (
        ConsentStatus.GRANTED if record.decision == Decision.GRANTED else ConsentStatus.WITHDRAWN
    )
    return Entry(
        status=status,
        version=record.version,
        effective_at=record.effective_at,
        recorded_at=record.recorded_at,
        record_id=record.record_id,
        sequence=record.sequence,
    )


def fold_one(entry: Entry | None, record: ConsentRecord) -> Entry:
    """The entry after one more record of the same subject and statement, in any order.

    The result is the winner of the two, so folding is order-independent; an incremental
    index (live state) can apply records as they arrive. Status is GRANTED or WITHDRAWN;
    apply `resolve` when reading, since OUTDATED changes when a statement is published.
    """
    if entry is None or winner_key(record) > winner_key(entry):
        return entry_of(record)
    return entry


def resolve(entry: Entry, latest_major: int | None) -> Entry:
    """A grant of an older MAJOR than the latest one reads as OUTDATED."""
    if entry.status == ConsentStatus.GRANTED and is_outdated(entry.version, latest_major):
        return replace(entry, status=ConsentStatus.OUTDATED)
    return entry


def state_at(
    records: Iterable[ConsentRecord],
    statements_latest_major: Mapping[str, int],
    at: datetime,
    as_known_at: datetime | None = None,
) -> dict[str, Entry]:
    """Consent per statement_id at effective time `at`, as known at `as_known_at` (None: now).

    `records` are one subject's, in any order; after a merge pass the records of every id
    merged into the survivor as well, since the rule compares times, not subjects.
    """
    at_utc = to_utc(at, "at")
    known = None if as_known_at is None else to_utc(as_known_at, "as_known_at")
    winners: dict[str, Entry] = {}
    for record in records:
        if is_visible(record, at_utc, known):
            winners[record.statement_id] = fold_one(winners.get(record.statement_id), record)
    return {sid: resolve(entry, statements_latest_major.get(sid)) for sid, entry in winners.items()}
