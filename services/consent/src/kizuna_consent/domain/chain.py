"""Verifying the ledger: the hash chain record by record, and the Merkle root over it.

`verify_chain` reads records in ledger order once and keeps only the previous hash and a
compact Merkle range, so it runs in O(log n) memory over a streamed export or cursor.
The first bad sequence is the smallest s such that records 1..s-1 verify and the record at
position s does not (wrong sequence, wrong prev_hash or wrong record_hash), so:

- a flipped byte in record s (any field, either hash) reports s;
- a deleted record s reports s (the next one arrives with sequence s+1);
- records s and t swapped (s < t) report s;
- a record rewritten *with* a recomputed hash reports s+1 (its successor's prev_hash no
  longer matches), and is caught at s itself only by a checkpoint's root.

Records after the first bad one are not read: past a break nothing can be trusted.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from kizuna_consent.domain.errors import ConsentError
from kizuna_consent.domain.merkle import EMPTY_ROOT, CompactRange, leaf_hash
from kizuna_consent.domain.records import GENESIS_HASH, ConsentRecord, compute_record_hash


class TreeHead(Protocol):
    """What a (signed) checkpoint asserts: the tree of its first `size` records has this root."""

    @property
    def size(self) -> int: ...

    @property
    def root_hash(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Verification:
    """The verdict. On failure, records_checked and root_hash cover the good prefix only.
    reason is a short machine-friendly word: sequence_mismatch, prev_hash_mismatch,
    record_hash_mismatch, unreadable_record, truncated (fewer records than the checkpoint
    covers), checkpoint_root_mismatch (the chain holds but is not the one signed) or
    timeline_mismatch (the chain holds, the table reads answer from does not follow it)."""

    ok: bool
    records_checked: int
    first_bad_sequence: int | None
    root_hash: bytes
    reason: str | None = None


def verify_chain(
    records: Iterable[ConsentRecord], checkpoint: TreeHead | None = None
) -> Verification:
    """Check every record's chain link and hash, in order, and compute the Merkle root.

    With a checkpoint, also check that the root over its first `size` records equals its
    root_hash (the signature is `checkpoint.verify_checkpoint`'s job). That catches a deleted
    tail ("truncated", first_bad_sequence = the first missing one) and a ledger rewritten and
    re-chained wholesale ("checkpoint_root_mismatch", first_bad_sequence None: the chain is
    self-consistent, so no single record can be blamed).
    """
    tree = CompactRange()
    expected_prev = GENESIS_HASH
    for record in records:
        expected = tree.size + 1
        reason = _check(record, expected, expected_prev)
        if reason is not None:
            return Verification(False, tree.size, expected, tree.root(), reason)
        tree.append(record_leaf(record))
        expected_prev = record.record_hash
        if (
            checkpoint is not None
            and tree.size == checkpoint.size
            and tree.root() != checkpoint.root_hash
        ):
            return Verification(False, tree.size, None, tree.root(), "checkpoint_root_mismatch")
    if checkpoint is not None:
        if tree.size < checkpoint.size:
            return Verification(False, tree.size, tree.size + 1, tree.root(), "truncated")
        if checkpoint.size == 0 and checkpoint.root_hash != EMPTY_ROOT:
            return Verification(False, tree.size, None, tree.root(), "checkpoint_root_mismatch")
    return Verification(True, tree.size, None, tree.root())


def record_leaf(record: ConsentRecord) -> bytes:
    """The record's Merkle leaf hash: the leaf data is its record_hash."""
    return leaf_hash(record.record_hash)


def _check(record: ConsentRecord, expected_sequence: int, expected_prev: bytes) -> str | None:
    """Why this record cannot be the next one, or None if it is."""
    if record.sequence != expected_sequence:
        return "sequence_mismatch"
    if record.prev_hash != expected_prev:
        return "prev_hash_mismatch"
    try:
        recomputed = compute_record_hash(expected_prev, record)
    except ConsentError:  # e.g. a naive timestamp read back from a tampered row
        return "unreadable_record"
    if record.record_hash != recomputed:
        return "record_hash_mismatch"
    return None
