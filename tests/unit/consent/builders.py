"""Small ledgers for the consent tests, built through the real `next_record`."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from kizuna_consent.domain.records import GENESIS, ChainHead, ConsentRecord, Decision, next_record
from kizuna_consent.domain.statements import Version

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def record_after(
    prev: ChainHead,
    i: int,
    *,
    subject_id: str = "cust-1",
    statement_id: str = "terms",
    version: str = "1.0",
    decision: Decision = Decision.GRANTED,
    effective_at: datetime | None = None,
    recorded_at: datetime | None = None,
    evidence: bytes | None = None,
    idempotency_key: str | None = None,
) -> ConsentRecord:
    recorded = recorded_at or T0 + timedelta(minutes=i)
    return next_record(
        prev,
        record_id=f"rec-{i:04d}",
        subject_id=subject_id,
        statement_id=statement_id,
        version=Version.parse(version),
        decision=decision,
        effective_at=effective_at or recorded - timedelta(hours=i % 5),
        recorded_at=recorded,
        channel="ec",
        site_id="shop-jp",
        evidence=evidence if evidence is not None else f"evidence-{i}".encode() + b"\x00\xff",
        idempotency_key=idempotency_key,
    )


def chain(n: int) -> list[ConsentRecord]:
    """n varied records: decisions, statements and idempotency keys alternate."""
    return list(stream(n))


def stream(n: int, evidence_size: int = 0) -> Iterator[ConsentRecord]:
    """The same ledger, one record at a time (the previous one is the only state kept)."""
    head = GENESIS
    for i in range(n):
        record = record_after(
            head,
            i,
            statement_id=("terms", "privacy", "marketing-email")[i % 3],
            decision=Decision.GRANTED if i % 2 == 0 else Decision.WITHDRAWN,
            idempotency_key=f"key-{i}" if i % 4 else None,
            evidence=bytes([i % 256]) * evidence_size if evidence_size else None,
        )
        yield record
        head = record.head
