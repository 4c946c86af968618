"""verify_chain: tampering (a flipped byte in any field, a deleted record, a swap) is caught
at exactly the first bad sequence, with streaming memory."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import pytest

from kizuna_consent.domain.chain import verify_chain
from kizuna_consent.domain.merkle import EMPTY_ROOT, leaf_hash, root_of
from kizuna_consent.domain.records import ConsentRecord, Decision, next_record
from kizuna_consent.domain.statements import Version
from tests.unit.consent.builders import chain, stream

N = 12
POSITIONS = [1, 2, 7, N]  # first, second, middle, last


@dataclass(frozen=True)
class Head:
    size: int
    root_hash: bytes


def prefix_root(records: list[ConsentRecord], n: int) -> bytes:
    return root_of(leaf_hash(r.record_hash) for r in records[:n])


def flip_str(s: str | None) -> str:
    """Flip the low bit of the first byte of the UTF-8 text (stays ASCII for ASCII input)."""
    data = bytearray((s or "").encode())
    if not data:
        return "x"
    data[0] ^= 0x01
    return data.decode()


def flip_bytes(b: bytes, at: int = 0) -> bytes:
    data = bytearray(b)
    data[at % len(data)] ^= 0x01
    return bytes(data)


TAMPER: dict[str, tuple[Callable[[ConsentRecord], ConsentRecord], str]] = {
    "sequence": (lambda r: replace(r, sequence=r.sequence ^ 0x100), "sequence_mismatch"),
    "record_id": (lambda r: replace(r, record_id=flip_str(r.record_id)), "record_hash_mismatch"),
    "subject_id": (lambda r: replace(r, subject_id=flip_str(r.subject_id)), "record_hash_mismatch"),
    "statement_id": (
        lambda r: replace(r, statement_id=flip_str(r.statement_id)),
        "record_hash_mismatch",
    ),
    "version": (
        lambda r: replace(r, version=Version(r.version.major ^ 1, r.version.minor)),
        "record_hash_mismatch",
    ),
    "decision": (
        lambda r: replace(
            r,
            decision=Decision.WITHDRAWN if r.decision == Decision.GRANTED else Decision.GRANTED,
        ),
        "record_hash_mismatch",
    ),
    "effective_at": (
        lambda r: replace(r, effective_at=r.effective_at + timedelta(microseconds=1)),
        "record_hash_mismatch",
    ),
    "recorded_at": (
        lambda r: replace(r, recorded_at=r.recorded_at - timedelta(microseconds=1)),
        "record_hash_mismatch",
    ),
    "channel": (lambda r: replace(r, channel=flip_str(r.channel)), "record_hash_mismatch"),
    "site_id": (lambda r: replace(r, site_id=flip_str(r.site_id)), "record_hash_mismatch"),
    "evidence": (lambda r: replace(r, evidence=flip_bytes(r.evidence, 5)), "record_hash_mismatch"),
    "idempotency_key": (
        lambda r: replace(r, idempotency_key=flip_str(r.idempotency_key)),
        "record_hash_mismatch",
    ),
    "idempotency_key_dropped": (
        lambda r: replace(r, idempotency_key=None if r.idempotency_key else "k"),
        "record_hash_mismatch",
    ),
    "prev_hash": (
        lambda r: replace(r, prev_hash=flip_bytes(r.prev_hash, 31)),
        "prev_hash_mismatch",
    ),
    "record_hash": (
        lambda r: replace(r, record_hash=flip_bytes(r.record_hash, 17)),
        "record_hash_mismatch",
    ),
}


def test_empty_ledger_verifies() -> None:
    v = verify_chain([])
    assert (v.ok, v.records_checked, v.first_bad_sequence, v.root_hash, v.reason) == (
        True,
        0,
        None,
        EMPTY_ROOT,
        None,
    )


def test_intact_ledger_verifies_with_its_merkle_root() -> None:
    records = chain(N)
    v = verify_chain(records)
    assert (v.ok, v.records_checked, v.first_bad_sequence, v.reason) == (True, N, None, None)
    assert v.root_hash == prefix_root(records, N)


@pytest.mark.parametrize("position", POSITIONS)
@pytest.mark.parametrize("name", sorted(TAMPER))
def test_a_changed_field_is_caught_at_its_record(name: str, position: int) -> None:
    records = chain(N)
    tamper, reason = TAMPER[name]
    bad = tamper(records[position - 1])
    assert bad != records[position - 1]
    records[position - 1] = bad
    v = verify_chain(records)
    assert (v.ok, v.first_bad_sequence, v.reason) == (False, position, reason)
    assert v.records_checked == position - 1
    assert v.root_hash == prefix_root(records, position - 1)


@pytest.mark.parametrize("position", POSITIONS)
def test_a_deleted_record_is_caught_where_it_was(position: int) -> None:
    records = chain(N)
    del records[position - 1]
    v = verify_chain(records)
    if position == N:
        # A deleted tail leaves a valid, shorter chain: only a checkpoint can tell.
        assert v.ok
        v = verify_chain(records, Head(N, prefix_root(chain(N), N)))
        assert (v.ok, v.first_bad_sequence, v.reason) == (False, N, "truncated")
    else:
        assert (v.ok, v.first_bad_sequence, v.reason) == (False, position, "sequence_mismatch")
    assert v.records_checked == position - 1


@pytest.mark.parametrize(("i", "j"), [(1, 2), (1, N), (4, 9), (N - 1, N)])
def test_two_swapped_records_are_caught_at_the_first(i: int, j: int) -> None:
    records = chain(N)
    records[i - 1], records[j - 1] = records[j - 1], records[i - 1]
    v = verify_chain(records)
    assert (v.ok, v.first_bad_sequence, v.reason) == (False, i, "sequence_mismatch")


@pytest.mark.parametrize(("i", "j"), [(1, 2), (3, 8)])
def test_swapped_contents_with_sequences_kept_are_caught_at_the_first(i: int, j: int) -> None:
    # A cleverer swap keeps each row's sequence and only exchanges what the rows say.
    records = chain(N)
    a, b = records[i - 1], records[j - 1]
    records[i - 1] = replace(b, sequence=a.sequence)
    records[j - 1] = replace(a, sequence=b.sequence)
    v = verify_chain(records)
    assert (v.ok, v.first_bad_sequence) == (False, i)


def test_a_rewritten_and_rehashed_record_breaks_the_next_link() -> None:
    records = chain(N)
    old = records[4]
    forged = next_record(
        records[3].head,
        record_id=old.record_id,
        subject_id=old.subject_id,
        statement_id=old.statement_id,
        version=old.version,
        decision=Decision.GRANTED if old.decision == Decision.WITHDRAWN else Decision.WITHDRAWN,
        effective_at=old.effective_at,
        recorded_at=old.recorded_at,
        channel=old.channel,
        site_id=old.site_id,
        evidence=old.evidence,
        idempotency_key=old.idempotency_key,
    )
    records[4] = forged
    v = verify_chain(records)
    assert (v.ok, v.first_bad_sequence, v.reason) == (False, 6, "prev_hash_mismatch")


def test_a_rechained_ledger_fails_against_the_signed_root() -> None:
    original = chain(N)
    head = Head(8, prefix_root(original, 8))
    assert verify_chain(original, head).ok
    # Rewrite record 3 and re-chain everything after it: the chain alone looks fine.
    rewritten = original[:2]
    for r in original[2:]:
        rewritten.append(
            next_record(
                rewritten[-1].head,
                record_id=r.record_id,
                subject_id="someone-else" if r.sequence == 3 else r.subject_id,
                statement_id=r.statement_id,
                version=r.version,
                decision=r.decision,
                effective_at=r.effective_at,
                recorded_at=r.recorded_at,
                channel=r.channel,
                site_id=r.site_id,
                evidence=r.evidence,
                idempotency_key=r.idempotency_key,
            )
        )
    assert verify_chain(rewritten).ok
    v = verify_chain(rewritten, head)
    assert (v.ok, v.first_bad_sequence, v.reason, v.records_checked) == (
        False,
        None,
        "checkpoint_root_mismatch",
        8,
    )


@pytest.mark.parametrize("size", [0, 1, 5, N])
def test_a_checkpoint_on_a_prefix_verifies(size: int) -> None:
    records = chain(N)
    v = verify_chain(records, Head(size, prefix_root(records, size)))
    assert (v.ok, v.records_checked, v.root_hash) == (True, N, prefix_root(records, N))


@pytest.mark.parametrize("size", [0, 1, 5, N])
def test_a_checkpoint_with_another_root_fails(size: int) -> None:
    records = chain(N)
    v = verify_chain(records, Head(size, flip_bytes(prefix_root(records, size))))
    assert (v.ok, v.reason) == (False, "checkpoint_root_mismatch")


def test_an_unreadable_record_is_reported_not_raised() -> None:
    records = chain(N)
    records[2] = replace(records[2], effective_at=datetime(2025, 1, 1))
    v = verify_chain(records)
    assert (v.ok, v.first_bad_sequence, v.reason) == (False, 3, "unreadable_record")


def test_reading_stops_at_the_first_bad_record() -> None:
    records = chain(N)
    records[3] = replace(records[3], channel="forged")
    read: list[int] = []

    def source() -> Iterator[ConsentRecord]:
        for r in records:
            read.append(r.sequence)
            yield r

    assert verify_chain(source()).first_bad_sequence == 4
    assert read == [1, 2, 3, 4]


def test_memory_stays_flat_over_a_streamed_ledger() -> None:
    # 3,000 records of 2 KiB evidence (~6 MiB if kept); the verifier may hold only a few.
    tracemalloc.start()
    try:
        v = verify_chain(stream(3000, evidence_size=2048))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (v.ok, v.records_checked) == (True, 3000)
    assert peak < 256 * 1024, f"peak {peak} bytes: records are being kept"
