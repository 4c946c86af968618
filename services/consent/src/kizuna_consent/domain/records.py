"""Ledger records, their canonical encoding and the hash chain that links them.

Canonical encoding (version 1), the exact bytes hashed; never change it, add a v2 instead::

    canonical(r) = field("kizuna.consent.record/v1")
                || u64be(r.sequence)
                || field(r.record_id) || field(r.subject_id) || field(r.statement_id)
                || field(str(r.version))            # "MAJOR.MINOR"
                || field(r.decision)                # "GRANTED" | "WITHDRAWN"
                || field(instant(r.effective_at)) || field(instant(r.recorded_at))
                || field(r.channel) || field(r.site_id)
                || field(r.evidence)                # the stored (encrypted) bytes, as they are
                || optional(r.idempotency_key)

    field(x)       = u32be(len(b)) || b, where b = x if bytes else UTF-8(x)
    optional(None) = 0x00;  optional(x) = 0x01 || field(x)
    instant(t)     = "YYYY-MM-DDTHH:MM:SS.ffffffZ" in UTC (see `instants`)

    record_hash = SHA-256(prev_hash || canonical(r)); the first record's prev_hash is 32 zero bytes.

Length prefixes make the encoding injective (no two records share bytes by moving a
separator), and the leading tag keeps these hashes apart from any other SHA-256 use.
The hash covers the evidence ciphertext, so destroying a subject's key (crypto-shredding)
leaves the chain verifiable. Sequences start at 1; the Merkle leaf index is sequence - 1.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from kizuna_consent.domain.errors import ConsentError
from kizuna_consent.domain.instants import canonical_instant, to_utc
from kizuna_consent.domain.statements import Version, check_statement_id

HASH_SIZE = 32
GENESIS_HASH = bytes(HASH_SIZE)
RECORD_TAG = b"kizuna.consent.record/v1"
MAX_U32 = 2**32 - 1
MAX_U64 = 2**64 - 1


class Decision(StrEnum):
    GRANTED = "GRANTED"
    WITHDRAWN = "WITHDRAWN"


@dataclass(frozen=True, slots=True)
class ChainHead:
    """Where the chain ends: the last sequence and its record hash (GENESIS when empty)."""

    sequence: int
    record_hash: bytes


GENESIS = ChainHead(0, GENESIS_HASH)


@dataclass(frozen=True, slots=True)
class ConsentRecord:
    """One ledger entry. Built by `next_record`; read back from storage as stored, unchecked,
    so that `verify_chain` can judge a tampered row instead of failing to load it."""

    sequence: int
    record_id: str
    subject_id: str
    statement_id: str
    version: Version
    decision: Decision
    effective_at: datetime
    recorded_at: datetime
    channel: str
    site_id: str
    evidence: bytes
    idempotency_key: str | None
    prev_hash: bytes
    record_hash: bytes

    @property
    def head(self) -> ChainHead:
        return ChainHead(self.sequence, self.record_hash)


def next_record(
    prev: ChainHead,
    *,
    record_id: str,
    subject_id: str,
    statement_id: str,
    version: Version,
    decision: Decision,
    effective_at: datetime,
    recorded_at: datetime,
    channel: str,
    site_id: str,
    evidence: bytes,
    idempotency_key: str | None = None,
) -> ConsentRecord:
    """The record following `prev` in the chain, with its hash; checks the record's rules."""
    if not record_id:
        raise InvalidRecord("record_id must not be empty", field="record_id")
    if not subject_id:
        raise InvalidRecord("subject_id must not be empty", field="subject_id")
    check_statement_id(statement_id)
    if idempotency_key == "":
        # An empty key would silently deduplicate every caller that forgot to set one.
        raise InvalidRecord("idempotency_key must be absent or non-empty", field="idempotency_key")
    if len(prev.record_hash) != HASH_SIZE or not 0 <= prev.sequence < MAX_U64:
        raise InvalidRecord("previous chain head is malformed", field="prev")
    effective = to_utc(effective_at, "effective_at")
    recorded = to_utc(recorded_at, "recorded_at")
    check_effective_at(effective, recorded)
    unhashed = ConsentRecord(
        sequence=prev.sequence + 1,
        record_id=record_id,
        subject_id=subject_id,
        statement_id=statement_id,
        version=version,
        decision=Decision(decision),
        effective_at=effective,
        recorded_at=recorded,
        channel=channel,
        site_id=site_id,
        evidence=bytes(evidence),
        idempotency_key=idempotency_key,
        prev_hash=prev.record_hash,
        record_hash=b"",
    )
    return replace(unhashed, record_hash=compute_record_hash(prev.record_hash, unhashed))


def check_effective_at(effective_at: datetime, recorded_at: datetime) -> None:
    """Consent can be learned late (a paper form) but cannot apply before we know of it."""
    if effective_at > recorded_at:
        raise EffectiveInFuture(effective_at, recorded_at)


def canonical_bytes(record: ConsentRecord) -> bytes:
    """The record's canonical encoding (see the module docstring); excludes both hashes."""
    if not 0 <= record.sequence <= MAX_U64:
        raise InvalidRecord(f"sequence {record.sequence} is out of range", field="sequence")
    parts = [
        _field(RECORD_TAG),
        record.sequence.to_bytes(8, "big"),
        _field(record.record_id),
        _field(record.subject_id),
        _field(record.statement_id),
        _field(str(record.version)),
        _field(str(record.decision)),
        _field(canonical_instant(record.effective_at, "effective_at")),
        _field(canonical_instant(record.recorded_at, "recorded_at")),
        _field(record.channel),
        _field(record.site_id),
        _field(record.evidence),
    ]
    if record.idempotency_key is None:
        parts.append(b"\x00")
    else:
        parts.append(b"\x01" + _field(record.idempotency_key))
    return b"".join(parts)


def compute_record_hash(prev_hash: bytes, record: ConsentRecord) -> bytes:
    """SHA-256(prev_hash || canonical(record)); `record.record_hash` is not read."""
    return hashlib.sha256(prev_hash + canonical_bytes(record)).digest()


def _field(value: str | bytes) -> bytes:
    data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    if len(data) > MAX_U32:
        raise InvalidRecord("a record field is longer than 4 GiB", field="record")
    return len(data).to_bytes(4, "big") + data


class InvalidRecord(ConsentError):
    pass


class EffectiveInFuture(ConsentError):
    def __init__(self, effective_at: datetime, recorded_at: datetime) -> None:
        super().__init__(
            f"effective_at {effective_at.isoformat()} is after the time it is recorded "
            f"({recorded_at.isoformat()}); consent cannot take effect in the future",
            field="effective_at",
        )
