"""The consent application: validates requests, seals evidence, appends through the
store (in groups), answers point-in-time questions and proves the ledger."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from kizuna_consent.domain.chain import Verification, verify_chain
from kizuna_consent.domain.checkpoint import Checkpoint, sign_checkpoint
from kizuna_consent.domain.errors import ConsentError
from kizuna_consent.domain.instants import read_canonical
from kizuna_consent.domain.merkle import inclusion_proof, root_of
from kizuna_consent.domain.records import ConsentRecord, Decision
from kizuna_consent.domain.state import ConsentStatus, Entry, resolve
from kizuna_consent.domain.statements import (
    Statement,
    Version,
    is_outdated,
    latest_majors,
    publish_statement,
)
from kizuna_consent.evidence import Evidence, OpenedEvidence, check_evidence, open_sealed, seal
from kizuna_consent.storage.interface import (
    Appended,
    LedgerStore,
    NewConsent,
    SubjectErased,
    SubjectKey,
)
from kizuna_consent.wire import consent_recorded, statement_published

MAX_ID = 128
# Rows per list of `export_batches` (and per ExportConsentState message).
EXPORT_BATCH = 1000

# subject_id, statement_id, status, version ("MAJOR.MINOR"), effective_at
ExportRow = tuple[str, str, ConsentStatus, str, datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class ConsentRequest:
    subject_id: str
    statement_id: str
    version: str
    decision: Decision
    effective_at: datetime | None
    channel: str
    site_id: str
    evidence: Evidence
    idempotency_key: str | None


@dataclass(frozen=True)
class Checked:
    """A request that passed every check but its subject's."""

    request: ConsentRequest
    version: Version
    effective_at: datetime | None  # None: when recorded


@dataclass(frozen=True)
class StateEntry:
    statement_id: str
    status: ConsentStatus
    entry: Entry | None


@dataclass(frozen=True)
class HistoryItem:
    record: ConsentRecord
    evidence: OpenedEvidence


@dataclass(frozen=True)
class Proof:
    leaf_index: int
    record_hash: bytes
    audit_path: list[bytes]
    checkpoint: Checkpoint


class ConsentApplication:
    def __init__(
        self,
        store: LedgerStore,
        signing_key: Ed25519PrivateKey,
        clock: Callable[[], datetime] = utcnow,
        on_recorded: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self._signing_key = signing_key
        self._clock = clock
        self._on_recorded = on_recorded or (lambda: None)
        # Statement versions seen published (they never change, nor go away).
        self._published: set[tuple[str, Version]] = set()

    # Statements -----------------------------------------------------------

    def publish_statement(
        self, statement_id: str, version: str, purpose: str, title: str, text: str
    ) -> Statement:
        existing = [s.version for s in self.store.list_statements(statement_id)]
        statement = publish_statement(
            statement_id, version, purpose, title, text, self._clock(), existing
        )
        self.store.publish_statement(statement, statement_published(statement))
        self._on_recorded()
        return statement

    def get_statement(self, statement_id: str, version: str) -> Statement:
        parsed = Version.parse(version) if version else None
        statement = self.store.get_statement(statement_id, parsed)
        if statement is None:
            raise StatementNotFound("no such statement version", statement_id=statement_id)
        return statement

    # Recording --------------------------------------------------------------

    def prepare(self, request: ConsentRequest) -> Checked | Appended:
        """`check`, after reading what `check` may not know yet: a known idempotency key
        short-cuts to the first answer, an unknown statement version is looked up. The
        subject is left to `record`: resolved here, outside the writers' lock, a merge or
        an erasure could land before the append."""
        if request.idempotency_key:
            check_key(request.idempotency_key)
            first = self.store.find_by_idempotency_key(request.idempotency_key)
            if first is not None:
                subject = self.store.canonical_subject(request.subject_id)
                if not same_request(first, request, subject):
                    raise key_reused()
                return Appended(first, created=False)
        return self.check(request)

    def knows_statement(self, statement_id: str, version: str) -> bool:
        """Whether `check` will find this statement version without reading the database."""
        try:
            return (statement_id, Version.parse(version)) in self._published
        except ConsentError:
            return False

    def check(self, request: ConsentRequest) -> Checked:
        """Everything about a request but its subject. A statement version is read once,
        then known: a published version never changes nor goes away."""
        check_id(request.subject_id, "subject_id")
        too_long = check_evidence(request.evidence)
        if too_long or len(request.channel) > MAX_ID or len(request.site_id) > MAX_ID:
            raise InvalidRequest("field too long", fields=",".join(too_long or ["channel/site_id"]))
        version = Version.parse(request.version)
        if (request.statement_id, version) not in self._published:
            if self.store.get_statement(request.statement_id, version) is None:
                raise StatementNotFound(
                    "no such statement version", statement_id=request.statement_id
                )
            self._published.add((request.statement_id, version))
        # Unset, it is when the record is appended (the ledger's clock, under its lock):
        # a time taken here could pass the append's if the clock stepped back between.
        effective_at = request.effective_at
        if effective_at is not None and effective_at > self._clock():
            raise EffectiveAtInFuture("effective_at must not be in the future")
        return Checked(request, version, effective_at)

    def record(self, batch: Sequence[Checked]) -> list[Appended | ConsentError]:
        """Checked requests appended in one durable transaction, their subjects resolved
        in it (see kizuna_kit.group_commit). An erased subject's request answers
        SubjectErased; an idempotency key that met another consent first (stored, or
        earlier in this batch) answers IdempotencyKeyReused; the others are recorded.
        Errors are answers, not raised: the transaction has committed the rest."""
        subjects = [""] * len(batch)

        def build(i: int, subject: SubjectKey) -> NewConsent:
            subjects[i] = subject.subject_id
            return self.seal(batch[i], subject)

        appended = self.store.append_resolving(
            [checked.request.subject_id for checked in batch], build, consent_recorded, self._clock
        )
        self._on_recorded()
        return [
            key_reused()
            if isinstance(answer, Appended)
            and not answer.created
            and not same_request(answer.record, checked.request, subject)
            else answer
            for checked, subject, answer in zip(batch, subjects, appended, strict=True)
        ]

    def seal(self, checked: Checked, subject: SubjectKey) -> NewConsent:
        """The request for its canonical subject, evidence sealed with the subject's key."""
        if subject.erased or subject.key is None:
            raise SubjectErased("the subject was erased; no consent can be recorded")
        request = checked.request
        record_id = str(uuid.uuid4())
        return NewConsent(
            record_id=record_id,
            subject_id=subject.subject_id,
            statement_id=request.statement_id,
            version=checked.version,
            decision=request.decision,
            effective_at=checked.effective_at,
            channel=request.channel,
            site_id=request.site_id,
            evidence=seal(request.evidence, subject.key, record_id.encode()),
            idempotency_key=request.idempotency_key or None,
        )

    def append(self, batch: Sequence[NewConsent]) -> list[Appended]:
        """Consents already resolved and sealed, in one durable transaction: bulk loads.
        Requests go through `record`, which resolves subjects under the writers' lock."""
        appended = self.store.append(batch, consent_recorded, self._clock)
        self._on_recorded()
        return appended

    # Point in time -------------------------------------------------------------

    def state(
        self, subject_id: str, at: datetime | None, as_known_at: datetime | None
    ) -> tuple[str, list[StateEntry]]:
        """One entry per published statement, for the subject's survivor.

        OUTDATED is judged against the statements as they stood at `at` (and as known
        at `as_known_at`): a grant valid in April stays GRANTED for April even after a
        new MAJOR came out in June.
        """
        check_id(subject_id, "subject_id")
        at = at or self._clock()
        subject = self.store.canonical_subject(subject_id)
        winners = self.store.state(subject, at, as_known_at)
        latest = self._latest_majors(at, as_known_at)
        entries = []
        for statement_id in sorted(set(self.store.latest_majors()) | set(winners)):
            entry = winners.get(statement_id)
            if entry is None:
                entries.append(StateEntry(statement_id, ConsentStatus.NOT_GIVEN, None))
            else:
                shown = resolve(entry, latest.get(statement_id))
                entries.append(StateEntry(statement_id, shown.status, shown))
        return subject, entries

    def export_state(
        self, at: datetime | None, as_known_at: datetime | None, statement_id: str | None
    ) -> Iterator[tuple[str, str, Entry]]:
        at = at or self._clock()
        latest = self._latest_majors(at, as_known_at)
        for subject, statement, entry in self.store.export_state(at, as_known_at, statement_id):
            yield subject, statement, resolve(entry, latest.get(statement))

    def export_batches(
        self, at: datetime | None, as_known_at: datetime | None, statement_id: str | None
    ) -> Iterator[list[ExportRow]]:
        """What `export_state` yields, in lists of up to EXPORT_BATCH rows (never an empty
        one), without a per-row domain object: a stream of a million rows pays a few
        operations per row."""
        at = at or self._clock()
        latest = self._latest_majors(at, as_known_at)
        # Few distinct (statement, decision, version) exist: each is resolved once.
        statuses: dict[tuple[str, str, str], ConsentStatus] = {}
        for chunk in self.store.export_rows(at, as_known_at, statement_id, EXPORT_BATCH):
            batch = []
            for subject, statement, decision, version, effective_at in chunk:
                status = statuses.get((statement, decision, version))
                if status is None:
                    status = export_status(statement, decision, version, latest)
                    statuses[statement, decision, version] = status
                batch.append((subject, statement, status, version, read_canonical(effective_at)))
            yield batch

    def _latest_majors(self, at: datetime, as_known_at: datetime | None) -> dict[str, int]:
        cutoff = at if as_known_at is None else min(at, as_known_at)
        return latest_majors(self.store.list_statements(), as_of=cutoff)

    def history(self, subject_id: str) -> Iterator[HistoryItem]:
        check_id(subject_id, "subject_id")
        subject = self.store.canonical_subject(subject_id)
        ids = [subject, *self.store.merged_ids(subject)]
        keys = {i: self.store.subject_key(i, create=False) for i in ids}
        for record in self.store.history(ids):
            opened = open_sealed(
                record.evidence, keys.get(record.subject_id), record.record_id.encode()
            )
            yield HistoryItem(record, opened)

    # Proofs ---------------------------------------------------------------------

    def verify(self) -> Verification:
        """The chain and its tree; then the timeline, which state and export read: a
        change there would alter their answers without touching the chain."""
        verdict = verify_chain(self.store.records(), checkpoint=self.store.tree())
        if not verdict.ok:
            return verdict
        mismatch = self.store.first_timeline_mismatch()
        if mismatch is None:
            return verdict
        return replace(verdict, ok=False, first_bad_sequence=mismatch, reason="timeline_mismatch")

    def checkpoint(self, size: int | None = None) -> Checkpoint:
        tree = self.store.tree()
        if size is None or size == tree.size:
            return sign_checkpoint(self._signing_key, tree.size, tree.root_hash, self._clock())
        if not 0 < size <= tree.size:
            raise InvalidRequest(f"checkpoint size must be between 1 and {tree.size}")
        return sign_checkpoint(
            self._signing_key, size, root_of(self.store.leaf_hashes(size)), self._clock()
        )

    def proof(self, record_id: str, size: int | None) -> Proof:
        record = self.store.find_record(record_id)
        if record is None:
            raise RecordNotFound("no record with this id")
        checkpoint = self.checkpoint(size)
        if record.sequence > checkpoint.size:
            raise InvalidRequest("the record is not in a tree of that size")
        leaves = self.store.leaf_hashes(checkpoint.size)
        path = inclusion_proof(leaves, record.sequence - 1, checkpoint.size)
        return Proof(record.sequence - 1, record.record_hash, path, checkpoint)

    @property
    def public_key(self) -> bytes:
        return self._signing_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def export_status(
    statement_id: str, decision: str, version: str, latest_majors: dict[str, int]
) -> ConsentStatus:
    """The status an export shows for a winning record (as `resolve` on its entry)."""
    if Decision(decision) == Decision.WITHDRAWN:
        return ConsentStatus.WITHDRAWN
    if is_outdated(Version.parse(version), latest_majors.get(statement_id)):
        return ConsentStatus.OUTDATED
    return ConsentStatus.GRANTED


def same_request(first: ConsentRecord, request: ConsentRequest, subject: str) -> bool:
    """A reused idempotency key must carry the same consent, or it is someone else's.
    `subject` is the request's subject as resolved now: the first record may name the
    same subject by the id it had before a merge. The evidence is sealed and is not
    compared."""
    return (
        first.subject_id in (subject, request.subject_id)
        and first.statement_id == request.statement_id
        and str(first.version) == request.version
        and first.decision == request.decision
        and request.effective_at in (None, first.effective_at)
        and first.channel == request.channel
        and first.site_id == request.site_id
    )


def key_reused() -> IdempotencyKeyReused:
    return IdempotencyKeyReused("this idempotency key was used for a different consent")


def check_id(value: str, field: str) -> None:
    """A subject id names the NATS subject its records go out on (consent.subject.<id>):
    whitespace or a '.', '*' or '>' would make that subject one the relay cannot publish,
    holding every later record back."""
    if (
        not value
        or len(value) > MAX_ID
        or not value.isprintable()
        or any(c.isspace() or c in ".*>" for c in value)
    ):
        raise InvalidRequest(
            f"{field} must be 1 to {MAX_ID} printable characters, without spaces, '.', '*' or '>'",
            field=field,
        )


def check_key(key: str) -> None:
    if len(key) > MAX_ID or not key.isprintable():
        raise InvalidRequest(
            f"idempotency_key must be 1 to {MAX_ID} printable characters",
            field="idempotency_key",
        )


class StatementNotFound(ConsentError):
    pass


class RecordNotFound(ConsentError):
    pass


class EffectiveAtInFuture(ConsentError):
    pass


class InvalidRequest(ConsentError):
    pass


class IdempotencyKeyReused(ConsentError):
    pass
