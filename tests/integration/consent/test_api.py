"""The ConsentService contract of API.md over real gRPC, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from google.protobuf.timestamp_pb2 import Timestamp

from kizuna.consent.v1 import consent_pb2 as pb
from kizuna_consent.application import (
    EXPORT_BATCH,
    Checked,
    ConsentRequest,
    IdempotencyKeyReused,
)
from kizuna_consent.domain.checkpoint import decode_checkpoint, verify_checkpoint
from kizuna_consent.domain.merkle import leaf_hash, verify_inclusion
from kizuna_consent.domain.records import Decision
from kizuna_consent.domain.statements import Version
from kizuna_consent.evidence import Evidence, seal
from kizuna_consent.storage.interface import Appended, NewConsent, SubjectErased
from tests.conftest import Keys
from tests.integration.consent.service import Consent, publish, running_consent

pytestmark = pytest.mark.integration
S = grpc.StatusCode
TANAKA = "5f0c6a8e-0000-4000-8000-000000000001"
SATO = "5f0c6a8e-0000-4000-8000-000000000002"


def ts(text: str) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(datetime.fromisoformat(text).replace(tzinfo=UTC))
    return stamp


@pytest.fixture
async def consent(tmp_path: Path, keys: Keys, database_url: str | None) -> AsyncIterator[Consent]:
    async with running_consent(tmp_path / "consent", keys, database_url, None) as running:
        yield running


async def grant(
    consent: Consent,
    subject: str,
    statement: str,
    version: str,
    at: str | None = None,
    decision: pb.Decision.ValueType = pb.DECISION_GRANTED,
    key: str = "",
) -> pb.RecordConsentResponse:
    request = pb.RecordConsentRequest(
        subject_id=subject,
        statement_id=statement,
        version=version,
        decision=decision,
        channel="store",
        site_id="site-a",
        idempotency_key=key,
        evidence=pb.Evidence(
            ip="203.0.113.7",
            user_agent="Paper form",
            collected_by="staff-17",
            proof_ref="scan-0042",
        ),
    )
    if at:
        request.effective_at.CopyFrom(ts(at))
    response: pb.RecordConsentResponse = await consent.call("RecordConsent", request)
    return response


async def state(
    consent: Consent, subject: str, at: str, known: str | None = None
) -> dict[str, str]:
    request = pb.GetConsentStateRequest(subject_id=subject, at=ts(at))
    if known:
        request.as_known_at.CopyFrom(ts(known))
    reply = await consent.call("GetConsentState", request, consent.keys.auditor)
    return {
        e.statement_id: pb.ConsentStatus.Name(e.status).removeprefix("CONSENT_STATUS_")
        for e in reply.entries
    }


async def test_the_auditors_questions(consent: Consent) -> None:
    await publish(consent, "marketing-email", "1.0")
    await grant(consent, TANAKA, "marketing-email", "1.0", at="2025-01-10T09:00:00")
    await grant(
        consent,
        TANAKA,
        "marketing-email",
        "1.0",
        at="2025-03-01T09:00:00",
        decision=pb.DECISION_WITHDRAWN,
    )
    assert await state(consent, TANAKA, "2025-02-01T00:00:00") == {"marketing-email": "GRANTED"}
    assert await state(consent, TANAKA, "2025-04-01T00:00:00") == {"marketing-email": "WITHDRAWN"}
    # Both records were recorded today: on 2024-12-31 we knew nothing.
    assert await state(consent, TANAKA, "2025-02-01T00:00:00", known="2024-12-31T00:00:00") == {
        "marketing-email": "NOT_GIVEN"
    }
    await consent.fails(
        "RecordConsent",
        pb.RecordConsentRequest(
            subject_id=TANAKA,
            statement_id="marketing-email",
            version="1.0",
            decision=pb.DECISION_GRANTED,
        ),
        S.PERMISSION_DENIED,
        "PERMISSION_DENIED",
        token=consent.keys.auditor,
    )


async def test_major_versions_outdate_grants(consent: Consent) -> None:
    await publish(consent, "terms", "1.0")
    await grant(consent, TANAKA, "terms", "1.0")
    now = (datetime.now(UTC) + timedelta(seconds=1)).replace(tzinfo=None).isoformat()
    await publish(consent, "terms", "1.1")
    assert await state(consent, TANAKA, now) == {"terms": "GRANTED"}
    await publish(consent, "terms", "2.0")
    assert await state(consent, TANAKA, now) == {"terms": "OUTDATED"}
    await grant(consent, TANAKA, "terms", "2.0")
    later = (datetime.now(UTC) + timedelta(seconds=1)).replace(tzinfo=None).isoformat()
    assert await state(consent, TANAKA, later) == {"terms": "GRANTED"}


async def test_error_rows_change_nothing(consent: Consent) -> None:
    await publish(consent, "privacy", "1.0")
    await consent.fails(
        "PublishStatement",
        pb.PublishStatementRequest(statement_id="privacy", version="1.0", title="t", text="other"),
        S.ALREADY_EXISTS,
        "STATEMENT_VERSION_EXISTS",
    )
    statement = (
        await consent.call("GetStatement", pb.GetStatementRequest(statement_id="privacy"))
    ).statement
    assert statement.text == "The text of privacy 1.0."
    for version, reason in (("1.0.1", "INVALID_VERSION"), ("v2", "INVALID_VERSION")):
        await consent.fails(
            "PublishStatement",
            pb.PublishStatementRequest(
                statement_id="privacy", version=version, title="t", text="x"
            ),
            S.INVALID_ARGUMENT,
            reason,
        )
    base: dict[str, Any] = {
        "subject_id": TANAKA,
        "statement_id": "privacy",
        "version": "1.0",
        "decision": pb.DECISION_GRANTED,
    }
    await consent.fails(
        "RecordConsent",
        pb.RecordConsentRequest(**{**base, "version": "9.0"}),
        S.NOT_FOUND,
        "STATEMENT_NOT_FOUND",
    )
    await consent.fails(
        "RecordConsent",
        pb.RecordConsentRequest(**{**base, "statement_id": "nope"}),
        S.NOT_FOUND,
        "STATEMENT_NOT_FOUND",
    )
    future = pb.RecordConsentRequest(**base)
    future.effective_at.FromDatetime(datetime.now(UTC) + timedelta(days=1))
    await consent.fails("RecordConsent", future, S.INVALID_ARGUMENT, "EFFECTIVE_AT_IN_FUTURE")
    await consent.fails(
        "RecordConsent",
        pb.RecordConsentRequest(**{**base, "decision": 0}),
        S.INVALID_ARGUMENT,
        "INVALID_DECISION",
    )
    # Empty, or what would make consent.subject.<id> a NATS subject the relay cannot
    # publish to (holding every later record back).
    for subject in ("", "tanaka san", "a.b", "x*", "y>"):
        await consent.fails(
            "RecordConsent",
            pb.RecordConsentRequest(**{**base, "subject_id": subject}),
            S.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
        )
    await consent.fails(
        "RecordConsent",
        pb.RecordConsentRequest(**{**base, "idempotency_key": "k" * 8000}),
        S.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    # Times no datetime holds.
    ancient = pb.RecordConsentRequest(**base)
    ancient.effective_at.seconds = -(10**12)
    await consent.fails("RecordConsent", ancient, S.INVALID_ARGUMENT, "INVALID_TIME")
    far = pb.GetConsentStateRequest(subject_id=TANAKA)
    far.at.seconds = 10**12
    await consent.fails("GetConsentState", far, S.INVALID_ARGUMENT, "INVALID_TIME")
    far_export = pb.ExportConsentStateRequest()
    far_export.as_known_at.seconds = 10**12
    await consent.fails(
        "ExportConsentState", far_export, S.INVALID_ARGUMENT, "INVALID_TIME", streaming=True
    )
    await consent.fails(
        "GetStatement",
        pb.GetStatementRequest(statement_id="privacy", version="3.0"),
        S.NOT_FOUND,
        "STATEMENT_NOT_FOUND",
    )
    await consent.fails(
        "GetRecordProof",
        pb.GetRecordProofRequest(record_id="nope"),
        S.NOT_FOUND,
        "RECORD_NOT_FOUND",
    )
    await consent.fails(
        "ListConsentHistory",
        pb.ListConsentHistoryRequest(subject_id=TANAKA),
        S.PERMISSION_DENIED,
        "PERMISSION_DENIED",
        token=consent.keys.writer,
        streaming=True,
    )
    with pytest.raises(grpc.aio.AioRpcError) as no_key:
        await consent.stub.GetConsentState(pb.GetConsentStateRequest(subject_id=TANAKA))
    assert no_key.value.code() == S.UNAUTHENTICATED


async def test_a_new_statement_version_is_found_once_published(consent: Consent) -> None:
    """Statement versions already seen are remembered; that must not hide a newer one, nor
    let a version that was never published through."""
    await publish(consent, "privacy", "1.0")
    first = await grant(consent, TANAKA, "privacy", "1.0")
    request = pb.RecordConsentRequest(
        subject_id=SATO, statement_id="privacy", version="1.1", decision=pb.DECISION_GRANTED
    )
    await consent.fails("RecordConsent", request, S.NOT_FOUND, "STATEMENT_NOT_FOUND")
    await publish(consent, "privacy", "1.1")
    second = await consent.call("RecordConsent", request)
    again = await grant(consent, SATO, "privacy", "1.0")
    assert (first.sequence, second.sequence, again.sequence) == (1, 2, 3)
    await consent.fails(
        "RecordConsent",
        pb.RecordConsentRequest(
            subject_id=SATO, statement_id="terms", version="1.0", decision=pb.DECISION_GRANTED
        ),
        S.NOT_FOUND,
        "STATEMENT_NOT_FOUND",
    )


async def test_many_concurrent_records_of_new_and_erased_subjects(consent: Consent) -> None:
    """Subjects looked up together: each caller gets its own subject's answer."""
    await publish(consent, "privacy", "1.0")
    await grant(consent, "warm", "privacy", "1.0")  # the statement version is known now
    await asyncio.to_thread(consent.service.store.apply_merge, "merged", "survivor", 1)
    await asyncio.to_thread(consent.service.store.apply_erasure, "erased", 2)
    subjects = [f"s-{i % 25}" for i in range(150)] + ["merged", "survivor", "erased"] * 10
    results = await asyncio.gather(
        *(grant(consent, s, "privacy", "1.0") for s in subjects), return_exceptions=True
    )
    for subject, result in zip(subjects, results, strict=True):
        if subject == "erased":
            assert isinstance(result, grpc.aio.AioRpcError)
            assert result.code() == S.FAILED_PRECONDITION
        else:
            assert isinstance(result, pb.RecordConsentResponse), result
            assert result.subject_id == ("survivor" if subject == "merged" else subject)
    verified = await consent.call("VerifyLedger", pb.VerifyLedgerRequest(), consent.keys.auditor)
    assert (verified.ok, verified.records_checked) == (True, 1 + 150 + 20)


async def test_idempotency_key_returns_the_first_answer(consent: Consent) -> None:
    await publish(consent, "privacy", "1.0")
    first = await grant(consent, TANAKA, "privacy", "1.0", key="form-1")
    before = consent.position()
    again = await grant(consent, TANAKA, "privacy", "1.0", key="form-1")
    assert again == first
    assert consent.position() == before


async def test_merged_and_erased_subjects(consent: Consent) -> None:
    await publish(consent, "privacy", "1.0")
    await grant(consent, SATO, "privacy", "1.0", at="2025-01-01T00:00:00")
    store = consent.service.store
    await asyncio.to_thread(store.apply_merge, SATO, TANAKA, 10)
    recorded = await grant(consent, SATO, "privacy", "1.0", decision=pb.DECISION_WITHDRAWN)
    assert recorded.subject_id == TANAKA  # recorded for the survivor
    now = (datetime.now(UTC) + timedelta(seconds=1)).replace(tzinfo=None).isoformat()
    assert (
        await state(consent, SATO, now)
        == await state(consent, TANAKA, now)
        == {"privacy": "WITHDRAWN"}
    )
    assert await state(consent, SATO, "2025-02-01T00:00:00") == {"privacy": "GRANTED"}

    history = await consent.stream(
        "ListConsentHistory", pb.ListConsentHistoryRequest(subject_id=TANAKA)
    )
    assert [h.record.subject_id for h in history] == [SATO, TANAKA]
    assert all(h.record.evidence.ip == "203.0.113.7" for h in history)

    await asyncio.to_thread(store.apply_erasure, TANAKA, 11)
    await consent.fails(
        "RecordConsent",
        pb.RecordConsentRequest(
            subject_id=TANAKA, statement_id="privacy", version="1.0", decision=pb.DECISION_GRANTED
        ),
        S.FAILED_PRECONDITION,
        "SUBJECT_ERASED",
    )
    history = await consent.stream(
        "ListConsentHistory", pb.ListConsentHistoryRequest(subject_id=SATO)
    )
    assert len(history) == 2
    for item in history:
        assert item.record.evidence_shredded
        assert item.record.evidence.ip == item.record.evidence.user_agent == ""
        assert item.record.evidence.proof_ref == "scan-0042"
    verified = await consent.call("VerifyLedger", pb.VerifyLedgerRequest(), consent.keys.auditor)
    assert verified.ok
    assert verified.records_checked == 2


async def test_checkpoints_and_inclusion_proofs(consent: Consent) -> None:
    await publish(consent, "privacy", "1.0")
    recorded = [await grant(consent, f"subject-{i}", "privacy", "1.0") for i in range(7)]
    reply = await consent.call("GetCheckpoint", pb.GetCheckpointRequest(), consent.keys.auditor)
    key = Ed25519PublicKey.from_public_bytes(reply.public_key)
    checkpoint = decode_checkpoint(reply.checkpoint.text)
    assert verify_checkpoint(key, checkpoint)
    assert checkpoint.size == 7
    for record in (recorded[0], recorded[4], recorded[6]):
        proof = await consent.call(
            "GetRecordProof",
            pb.GetRecordProofRequest(record_id=record.record_id),
            consent.keys.auditor,
        )
        assert proof.record_hash == record.record_hash
        assert verify_inclusion(
            leaf_hash(proof.record_hash),
            proof.leaf_index,
            proof.checkpoint.size,
            list(proof.audit_path),
            proof.checkpoint.root_hash,
        )
    old = await consent.call(
        "GetRecordProof",
        pb.GetRecordProofRequest(record_id=recorded[1].record_id, checkpoint_size=3),
        consent.keys.auditor,
    )
    assert old.checkpoint.size == 3
    assert verify_inclusion(
        leaf_hash(old.record_hash), 1, 3, list(old.audit_path), old.checkpoint.root_hash
    )
    assert not verify_inclusion(
        leaf_hash(old.record_hash), 2, 3, list(old.audit_path), old.checkpoint.root_hash
    )


async def test_concurrent_records_form_one_chain(consent: Consent) -> None:
    await publish(consent, "privacy", "1.0")
    replies = await asyncio.gather(
        *(grant(consent, f"s-{i % 20}", "privacy", "1.0") for i in range(200))
    )
    assert sorted(r.sequence for r in replies) == list(range(1, 201))
    verified = await consent.call("VerifyLedger", pb.VerifyLedgerRequest(), consent.keys.auditor)
    assert (verified.ok, verified.records_checked) == (True, 200)
    rows = await export(consent, pb.ExportConsentStateRequest(at=ts("2100-01-01T00:00:00")))
    assert sorted(r.subject_id for r in rows) == sorted(f"s-{i}" for i in range(20))
    assert {r.status for r in rows} == {pb.CONSENT_STATUS_GRANTED}


async def export(
    consent: Consent, request: pb.ExportConsentStateRequest
) -> list[pb.ExportedConsentState]:
    messages = await consent.stream("ExportConsentState", request, consent.keys.auditor)
    assert all(message.states for message in messages), "no message comes empty"
    return [row for message in messages for row in message.states]


def new_consent(
    subject: str, statement: str, decision: Decision, effective_at: datetime
) -> NewConsent:
    """A record appended without RPCs (as `bench/seed_consent.py` does)."""
    record_id = str(uuid.uuid4())
    return NewConsent(
        record_id=record_id,
        subject_id=subject,
        statement_id=statement,
        version=Version(1, 0),
        decision=decision,
        effective_at=effective_at,
        channel="store",
        site_id="site-a",
        evidence=seal(Evidence(ip="203.0.113.7"), bytes(32), record_id.encode()),
        idempotency_key=None,
    )


async def test_export_batches_rows_in_order_across_messages(consent: Consent) -> None:
    """More rows than one message holds: full messages, then the rest, the order kept, every
    field of every row."""
    await publish(consent, "privacy", "1.0")
    await publish(consent, "terms", "1.0")
    await publish(consent, "terms", "2.0")
    effective = datetime(2024, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)
    subjects = [f"s-{n:04d}" for n in range(EXPORT_BATCH + 300)]
    items = [
        new_consent(
            subject, "privacy", Decision.GRANTED if n % 3 else Decision.WITHDRAWN, effective
        )
        for n, subject in enumerate(subjects)
    ] + [new_consent(subject, "terms", Decision.GRANTED, effective) for subject in subjects[:500]]
    await asyncio.to_thread(consent.service.app.append, items)

    messages = await consent.stream(
        "ExportConsentState",
        pb.ExportConsentStateRequest(at=ts("2100-01-01T00:00:00")),
        consent.keys.auditor,
    )
    assert [len(m.states) for m in messages] == [EXPORT_BATCH, 800]
    rows = [row for message in messages for row in message.states]
    expected = sorted([(s, "privacy") for s in subjects] + [(s, "terms") for s in subjects[:500]])
    assert [(r.subject_id, r.statement_id) for r in rows] == expected
    by_key = {(r.subject_id, r.statement_id): r for r in rows}
    assert by_key["s-0000", "privacy"].status == pb.CONSENT_STATUS_WITHDRAWN
    assert by_key["s-0001", "privacy"].status == pb.CONSENT_STATUS_GRANTED
    # A grant of MAJOR 1 once MAJOR 2 is out.
    assert by_key["s-0001", "terms"].status == pb.CONSENT_STATUS_OUTDATED
    assert {r.version for r in rows} == {"1.0"}
    assert {r.effective_at.ToDatetime(tzinfo=UTC) for r in rows} == {effective}

    # A statement filter, and a time before anything was effective: no message at all.
    terms = await export(
        consent,
        pb.ExportConsentStateRequest(at=ts("2100-01-01T00:00:00"), statement_id="terms"),
    )
    assert [(r.subject_id, r.statement_id) for r in terms] == [(s, "terms") for s in subjects[:500]]
    assert await export(consent, pb.ExportConsentStateRequest(at=ts("2024-03-01T12:30:15"))) == []


async def test_export_of_an_empty_ledger_sends_no_message(consent: Consent) -> None:
    assert await export(consent, pb.ExportConsentStateRequest(at=ts("2100-01-01T00:00:00"))) == []


async def test_outdated_is_judged_as_of_the_time_asked(consent: Consent) -> None:
    await publish(consent, "terms", "1.0")
    await grant(consent, TANAKA, "terms", "1.0")
    before_v2 = datetime.now(UTC).replace(tzinfo=None).isoformat()
    await asyncio.sleep(0.01)
    await publish(consent, "terms", "2.0")
    later = (datetime.now(UTC) + timedelta(seconds=1)).replace(tzinfo=None).isoformat()
    assert await state(consent, TANAKA, before_v2) == {"terms": "GRANTED"}
    assert await state(consent, TANAKA, later) == {"terms": "OUTDATED"}


async def test_a_reused_idempotency_key_for_another_consent_is_refused(consent: Consent) -> None:
    await publish(consent, "privacy", "1.0")
    await grant(consent, TANAKA, "privacy", "1.0", key="order-77")
    await consent.fails(
        "RecordConsent",
        pb.RecordConsentRequest(
            subject_id=SATO,
            statement_id="privacy",
            version="1.0",
            decision=pb.DECISION_GRANTED,
            idempotency_key="order-77",
        ),
        S.FAILED_PRECONDITION,
        "IDEMPOTENCY_KEY_REUSED",
    )


async def test_a_key_reused_with_another_channel_or_time_is_refused(consent: Consent) -> None:
    """Answering those with the first record would drop the caller's consent unsaid."""
    await publish(consent, "privacy", "1.0")
    await grant(consent, TANAKA, "privacy", "1.0", key="form-9", at="2025-01-01T00:00:00")
    request = pb.RecordConsentRequest(
        subject_id=TANAKA,
        statement_id="privacy",
        version="1.0",
        decision=pb.DECISION_GRANTED,
        channel="store",
        site_id="site-a",
        idempotency_key="form-9",
    )
    request.effective_at.CopyFrom(ts("2025-01-01T00:00:00"))
    assert (await consent.call("RecordConsent", request)).record_id  # the same: answered
    request.effective_at.CopyFrom(ts("2025-03-01T00:00:00"))
    await consent.fails("RecordConsent", request, S.FAILED_PRECONDITION, "IDEMPOTENCY_KEY_REUSED")
    request.effective_at.CopyFrom(ts("2025-01-01T00:00:00"))
    request.channel = "call-centre"
    await consent.fails("RecordConsent", request, S.FAILED_PRECONDITION, "IDEMPOTENCY_KEY_REUSED")


async def test_a_retry_after_a_merge_gets_the_first_answer(consent: Consent) -> None:
    await publish(consent, "privacy", "1.0")
    first = await grant(consent, SATO, "privacy", "1.0", key="form-42")
    await asyncio.to_thread(consent.service.store.apply_merge, SATO, TANAKA, 10)
    before = consent.position()
    again = await grant(consent, SATO, "privacy", "1.0", key="form-42")
    assert again == first
    assert consent.position() == before


async def test_a_key_reused_for_another_consent_at_the_same_time_is_refused(
    consent: Consent,
) -> None:
    """Requests that both passed `prepare` before either was recorded: the key is checked
    again where it is claimed, in the append, whether in one group or in two."""
    await publish(consent, "privacy", "1.0")
    app = consent.service.app

    async def prepared(subject: str, key: str) -> Checked:
        checked = await asyncio.to_thread(app.prepare, privacy_grant(subject, key=key))
        assert isinstance(checked, Checked)
        return checked

    one_group = [await prepared(s, "form-1") for s in (TANAKA, SATO, TANAKA)]
    first, other, same = await asyncio.to_thread(app.record, one_group)
    assert isinstance(first, Appended)
    assert first.created
    assert isinstance(other, IdempotencyKeyReused)
    assert same == Appended(first.record, created=False)

    tanaka, sato = await prepared(TANAKA, "form-2"), await prepared(SATO, "form-2")
    (recorded,) = await asyncio.to_thread(app.record, [tanaka])
    (refused,) = await asyncio.to_thread(app.record, [sato])
    assert isinstance(recorded, Appended)
    assert recorded.created
    assert isinstance(refused, IdempotencyKeyReused)
    assert consent.service.store.tree().size == 2


def privacy_grant(subject: str, key: str | None = None) -> ConsentRequest:
    """A grant of privacy 1.0 as the application takes it (past the gRPC layer)."""
    return ConsentRequest(
        subject_id=subject,
        statement_id="privacy",
        version="1.0",
        decision=Decision.GRANTED,
        effective_at=None,
        channel="",
        site_id="",
        evidence=Evidence(ip="203.0.113.7"),
        idempotency_key=key,
    )


async def test_a_merge_or_an_erasure_between_prepare_and_record_is_seen(
    consent: Consent,
) -> None:
    """The path of requests with an idempotency key: `prepare` reads outside the writers'
    lock, and leaves the subject to `record`, which resolves it under the lock."""
    await publish(consent, "privacy", "1.0")
    app = consent.service.app

    prepared = [
        await asyncio.to_thread(app.prepare, privacy_grant(s, key=f"form-{s}"))
        for s in (TANAKA, "merged")
    ]
    checked = [p for p in prepared if isinstance(p, Checked)]
    assert len(checked) == 2
    await asyncio.to_thread(consent.service.store.apply_erasure, TANAKA, 1)
    await asyncio.to_thread(consent.service.store.apply_merge, "merged", SATO, 2)
    erased, merged = await asyncio.to_thread(app.record, checked)
    assert isinstance(erased, SubjectErased)
    assert isinstance(merged, Appended)
    assert merged.record.subject_id == SATO
    assert consent.service.store.tree().size == 1
    again = await asyncio.to_thread(app.prepare, privacy_grant("merged", key="form-merged"))
    assert again == Appended(merged.record, created=False)


async def test_an_erasure_between_check_and_record_still_refuses(consent: Consent) -> None:
    """The grouped path: subjects are resolved under the writers' lock, with the append."""
    await publish(consent, "privacy", "1.0")
    app = consent.service.app

    checked = [app.check(privacy_grant(s)) for s in (TANAKA, SATO, "merged")]
    await asyncio.to_thread(consent.service.store.apply_erasure, TANAKA, 1)
    await asyncio.to_thread(consent.service.store.apply_merge, "merged", SATO, 2)
    erased, sato, merged = await asyncio.to_thread(app.record, checked)
    assert isinstance(erased, SubjectErased)
    assert isinstance(sato, Appended)
    assert isinstance(merged, Appended)
    assert (sato.record.sequence, merged.record.sequence) == (1, 2)
    assert merged.record.subject_id == SATO
    history = await consent.stream(
        "ListConsentHistory", pb.ListConsentHistoryRequest(subject_id=SATO), consent.keys.auditor
    )
    assert [h.record.evidence.ip for h in history] == ["203.0.113.7"] * 2
    assert consent.service.store.tree().size == 2
