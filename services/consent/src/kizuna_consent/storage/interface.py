"""What the consent application needs from its storage.

Both implementations (SQLite, PostgreSQL) keep, in one database:
- `statements`: published statement versions (the database refuses UPDATE/DELETE);
- `ledger`: the hash-chained consent records (the database refuses UPDATE/DELETE);
- `ledger_head`: one row, the chain head and the Merkle compact range (peaks);
- `timeline`: the point-in-time index, one row per record keyed by the subject's
  *current* canonical id (rows move to the survivor on a merge); derived from the
  ledger and the aliases, rebuildable at any time;
- `subject_aliases` (merged id -> survivor id), `erased_subjects`,
  `subject_keys` (per-subject evidence keys; deleting one is crypto-shredding);
- `tracking`: the last IDENTITY position applied (same transaction as the effect);
- `outbox`: events for stream CONSENT, read by the shared relay.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from eventsourcing.persistence import Notification

from kizuna_consent.domain.errors import ConsentError
from kizuna_consent.domain.records import ConsentRecord, Decision
from kizuna_consent.domain.state import Entry
from kizuna_consent.domain.statements import Statement, Version


class SubjectErased(ConsentError):
    """No consent may be recorded for an erased subject."""


@dataclass(frozen=True)
class NewConsent:
    """A validated RecordConsent, subject already resolved to its canonical (survivor) id.

    The store assigns sequence, recorded_at (its clock, under the append lock, so
    recorded_at never decreases along the ledger), prev_hash and record_hash.
    `evidence` is already sealed with the subject's key by the application.
    """

    record_id: str
    subject_id: str
    statement_id: str
    version: Version
    decision: Decision
    effective_at: datetime | None  # None: when recorded (the request gave none)
    channel: str
    site_id: str
    evidence: bytes
    idempotency_key: str | None


@dataclass(frozen=True)
class SubjectKey:
    """What recording for a subject id needs: its canonical (survivor) id, whether that
    subject is erased, and its evidence key (None once shredded)."""

    subject_id: str
    erased: bool
    key: bytes | None


@dataclass(frozen=True)
class Appended:
    record: ConsentRecord
    # False when the idempotency key was seen before: `record` is the first answer.
    created: bool


@dataclass(frozen=True)
class OutboxEvent:
    """An event for stream CONSENT: the NATS subject and a serialized
    kizuna.events.v1.Envelope without event_id/position (the relay sets those)."""

    subject: str
    envelope: bytes


@dataclass(frozen=True)
class TreeState:
    size: int
    root_hash: bytes


class LedgerStore(Protocol):
    # Statements -------------------------------------------------------------
    def publish_statement(self, statement: Statement, event: OutboxEvent) -> None:
        """Inserts the statement and its outbox event in one transaction;
        raises StatementVersionExists when that (id, version) is published."""

    def get_statement(self, statement_id: str, version: Version | None = None) -> Statement | None:
        """That version, or the latest (highest) version when `version` is None."""

    def list_statements(self, statement_id: str | None = None) -> list[Statement]:
        """Every version, ordered by statement_id then version."""

    def latest_majors(self) -> dict[str, int]:
        """statement_id -> highest published MAJOR."""

    # Appends ----------------------------------------------------------------
    def append(
        self,
        batch: Sequence[NewConsent],
        event_for: Callable[[ConsentRecord], OutboxEvent],
        now: Callable[[], datetime],
    ) -> list[Appended]:
        """Appends the batch in ONE transaction (group commit), in order, serialized
        against every other append (a lock on ledger_head). For each item: an existing
        idempotency key yields the stored record (created=False, nothing written);
        otherwise the next chained record (domain `next_record`, recorded_at=now()),
        its timeline row, its outbox event, and the new head (sequence, hash, Merkle
        peaks via domain CompactRange). A domain error for one item (e.g.
        EffectiveInFuture) must not poison the others: validate before opening the
        transaction, or raise and let the caller retry items one by one."""

    def append_resolving(
        self,
        subject_ids: Sequence[str],
        build: Callable[[int, SubjectKey], NewConsent],
        event_for: Callable[[ConsentRecord], OutboxEvent],
        now: Callable[[], datetime],
    ) -> list[Appended | SubjectErased]:
        """`append` for requests whose subjects are not resolved yet, in ONE transaction:
        after taking the lock, each subject id is resolved (`canonical_subject`, `is_erased`
        of it, and its key as `subject_key(create=True)` would give it; none is made for an
        erased subject), and `build(i, subject)` gives the i-th item to append. An erased
        (or shredded) subject's item answers SubjectErased and the others are appended."""

    def find_by_idempotency_key(self, key: str) -> ConsentRecord | None: ...

    def find_record(self, record_id: str) -> ConsentRecord | None: ...

    # Reads ------------------------------------------------------------------
    def state(
        self, subject_id: str, at: datetime, as_known_at: datetime | None
    ) -> dict[str, Entry]:
        """statement_id -> the winning timeline row (domain WINNER_ORDER_SQL) among rows of
        this canonical subject with effective_at <= at and recorded_at <= as_known_at
        (when given). Indexed lookups, never a ledger scan. Status is GRANTED/WITHDRAWN;
        the application applies OUTDATED."""

    def export_state(
        self, at: datetime, as_known_at: datetime | None, statement_id: str | None
    ) -> Iterator[tuple[str, str, Entry]]:
        """(canonical subject, statement_id, entry) for every subject, streamed
        (server-side cursor on PostgreSQL), ordered by subject then statement."""

    def export_rows(
        self, at: datetime, as_known_at: datetime | None, statement_id: str | None, size: int
    ) -> Iterator[list[tuple[str, str, str, str, str]]]:
        """What `export_state` streams, raw and cheap: lists of up to `size` rows (never
        an empty one) of (subject_id, statement_id, decision "GRANTED"/"WITHDRAWN", version
        "MAJOR.MINOR", effective_at in canonical text), same order."""

    def history(self, subject_ids: Sequence[str]) -> Iterator[ConsentRecord]:
        """Ledger records of these recorded subject ids, in ledger order."""

    def records(self, start_sequence: int = 1) -> Iterator[ConsentRecord]:
        """Every ledger row as stored (unchecked), in sequence order, streamed."""

    def tree(self) -> TreeState:
        """Size and RFC 6962 root from ledger_head (O(1), no scan)."""

    def leaf_hashes(self, size: int) -> Sequence[bytes]:
        """Merkle leaf hashes (domain `record_leaf`) of sequences 1..size (for inclusion proofs)."""

    # Subjects and identity events ---------------------------------------------
    def canonical_subject(self, subject_id: str) -> str:
        """Follows subject_aliases to the live survivor (itself when not merged)."""

    def merged_ids(self, canonical_id: str) -> list[str]:
        """Every id whose canonical subject is `canonical_id` (not including itself)."""

    def is_erased(self, subject_id: str) -> bool: ...

    def subject_key(self, subject_id: str, create: bool) -> bytes | None:
        """The subject's 32-byte evidence key; created when missing and `create`;
        None once shredded (erased)."""

    def apply_merge(self, merged_id: str, survivor_id: str, position: int) -> bool:
        """In one transaction with tracking: alias merged -> survivor, move the merged
        subject's timeline rows (and of ids merged into it) to the survivor.
        False (and no effect) when `position` <= the tracked IDENTITY position."""

    def apply_erasure(self, subject_id: str, position: int) -> bool:
        """In one transaction with tracking: mark erased, delete its evidence key and the
        keys of ids merged into it. False when already applied."""

    def tracked_position(self) -> int: ...

    # Timeline maintenance ---------------------------------------------------------
    def rebuild_timeline(self) -> None:
        """Recomputes the timeline from the ledger and the aliases."""

    def first_timeline_mismatch(self) -> int | None:
        """The first sequence at which the timeline (what reads answer from) differs from
        what the ledger and the merges make of it; None when they agree."""

    def timeline_rows(self) -> list[tuple[object, ...]]:
        """The whole timeline, in a stable order (tests compare live vs rebuilt)."""

    # Outbox, read by the relay (kizuna_kit.relay.NotificationLog) --------------------
    def select_notifications(
        self, start: int | None, limit: int, stop: int | None = None, topics: Sequence[str] = ()
    ) -> Sequence[Notification]:
        """Outbox rows from `start` as eventsourcing Notifications: id=position,
        topic=NATS subject, state=envelope bytes, originator_id/version from the row."""

    def max_notification_id(self) -> int | None: ...

    def close(self) -> None: ...
