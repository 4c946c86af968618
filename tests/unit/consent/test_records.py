"""Records: the documented canonical encoding, the chain link, and the record rules."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from kizuna_consent.domain.instants import NaiveDatetime
from kizuna_consent.domain.records import (
    GENESIS,
    GENESIS_HASH,
    ChainHead,
    ConsentRecord,
    Decision,
    EffectiveInFuture,
    InvalidRecord,
    canonical_bytes,
    compute_record_hash,
    next_record,
)
from kizuna_consent.domain.statements import InvalidStatementId, Version

RECORDED = datetime(2025, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
EFFECTIVE = datetime(2025, 1, 10, 9, 30, tzinfo=timezone(timedelta(hours=9)))


def make(prev: ChainHead = GENESIS, /, **overrides: object) -> ConsentRecord:
    args: dict[str, object] = {
        "record_id": "rec-1",
        "subject_id": "cust-\u7530\u4e2d",
        "statement_id": "marketing-email",
        "version": Version(1, 0),
        "decision": Decision.GRANTED,
        "effective_at": EFFECTIVE,
        "recorded_at": RECORDED,
        "channel": "store",
        "site_id": "shop-jp",
        "evidence": b"\x00ciphertext\xff",
        "idempotency_key": "idem-1",
    } | overrides
    return next_record(prev, **args)  # type: ignore[arg-type]


def field(b: bytes) -> bytes:
    return len(b).to_bytes(4, "big") + b


def test_canonical_bytes_follow_the_documented_layout() -> None:
    # Written out from the module docstring by hand, so a change to the encoding shows here.
    expected = b"".join(
        [
            field(b"kizuna.consent.record/v1"),
            (1).to_bytes(8, "big"),
            field(b"rec-1"),
            field("cust-\u7530\u4e2d".encode()),
            field(b"marketing-email"),
            field(b"1.0"),
            field(b"GRANTED"),
            field(b"2025-01-10T00:30:00.000000Z"),
            field(b"2025-05-01T12:00:00.123456Z"),
            field(b"store"),
            field(b"shop-jp"),
            field(b"\x00ciphertext\xff"),
            b"\x01" + field(b"idem-1"),
        ]
    )
    record = make()
    assert canonical_bytes(record) == expected
    assert record.record_hash == hashlib.sha256(GENESIS_HASH + expected).digest()
    # Pinned: any drift in the encoding breaks every stored ledger, so it must be deliberate.
    assert record.record_hash.hex() == (
        "231f72f5e57043b14bca3cddb7dfdcf5ee9252601a1bcb5b9c482e8105ca0d7b"
    )


def test_absent_idempotency_key_is_a_single_zero_byte() -> None:
    record = make(idempotency_key=None)
    assert canonical_bytes(record).endswith(field(b"\x00ciphertext\xff") + b"\x00")


def test_first_record_links_to_genesis_and_next_links_to_it() -> None:
    first = make()
    assert (first.sequence, first.prev_hash) == (1, bytes(32))
    second = make(first.head, record_id="rec-2")
    assert (second.sequence, second.prev_hash) == (2, first.record_hash)
    assert (
        second.record_hash == hashlib.sha256(first.record_hash + canonical_bytes(second)).digest()
    )
    assert compute_record_hash(second.prev_hash, second) == second.record_hash


def test_times_are_stored_in_utc() -> None:
    record = make()
    assert record.effective_at == EFFECTIVE
    assert record.effective_at.tzinfo is UTC
    assert record.recorded_at.tzinfo is UTC


@pytest.mark.parametrize(
    ("a", "b"),
    [
        # Moving a character across a field boundary must change the bytes (length prefixes).
        ({"record_id": "rec-1x", "subject_id": "y"}, {"record_id": "rec-1", "subject_id": "xy"}),
        ({"channel": "ab", "site_id": "c"}, {"channel": "a", "site_id": "bc"}),
        ({"site_id": "s", "evidence": b"e"}, {"site_id": "se", "evidence": b""}),
        ({"idempotency_key": None}, {"idempotency_key": "\x00"}),
    ],
)
def test_encoding_is_injective_across_fields(a: dict[str, object], b: dict[str, object]) -> None:
    assert canonical_bytes(make(**a)) != canonical_bytes(make(**b))


@pytest.mark.parametrize(
    "change",
    [
        {"record_id": "rec-2"},
        {"subject_id": "cust-2"},
        {"statement_id": "terms"},
        {"version": Version(1, 1)},
        {"decision": Decision.WITHDRAWN},
        {"effective_at": EFFECTIVE + timedelta(microseconds=1)},
        {"recorded_at": RECORDED + timedelta(microseconds=1)},
        {"channel": "app"},
        {"site_id": "shop-us"},
        {"evidence": b"\x01ciphertext\xff"},
        {"idempotency_key": None},
        {"idempotency_key": "idem-2"},
    ],
)
def test_every_field_is_covered_by_the_hash(change: dict[str, object]) -> None:
    assert make(**change).record_hash != make().record_hash


def test_sequence_and_prev_hash_are_covered_by_the_hash() -> None:
    record = make()
    assert compute_record_hash(b"\x01" * 32, record) != record.record_hash
    assert compute_record_hash(record.prev_hash, replace(record, sequence=2)) != record.record_hash


@pytest.mark.parametrize(
    ("overrides", "error", "match"),
    [
        ({"record_id": ""}, InvalidRecord, "record_id"),
        ({"subject_id": ""}, InvalidRecord, "subject_id"),
        ({"statement_id": "Marketing"}, InvalidStatementId, "statement_id"),
        ({"idempotency_key": ""}, InvalidRecord, "idempotency_key"),
        ({"effective_at": datetime(2025, 1, 1)}, NaiveDatetime, "effective_at"),
        ({"recorded_at": datetime(2025, 6, 1)}, NaiveDatetime, "recorded_at"),
        ({"effective_at": RECORDED + timedelta(microseconds=1)}, EffectiveInFuture, "future"),
    ],
)
def test_next_record_rejects(
    overrides: dict[str, object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        make(**overrides)


def test_effective_equal_to_recorded_is_allowed() -> None:
    assert make(effective_at=RECORDED).effective_at == RECORDED


@pytest.mark.parametrize("head", [ChainHead(0, b"short"), ChainHead(-1, GENESIS_HASH)])
def test_next_record_rejects_a_malformed_head(head: ChainHead) -> None:
    with pytest.raises(InvalidRecord, match="chain head"):
        make(head)


def test_canonical_bytes_refuse_a_naive_time_read_back_from_storage() -> None:
    record = replace(make(), recorded_at=datetime(2025, 5, 1))
    with pytest.raises(NaiveDatetime):
        canonical_bytes(record)
