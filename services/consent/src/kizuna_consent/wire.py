"""Consent events for stream CONSENT, written to the outbox with the change they describe."""

from __future__ import annotations

from kizuna.consent.v1 import consent_pb2 as pb
from kizuna.consent.v1 import events_pb2 as ev
from kizuna_consent.domain.records import ConsentRecord, Decision
from kizuna_consent.domain.statements import Statement
from kizuna_consent.storage.interface import OutboxEvent
from kizuna_kit.wire import OutgoingEvent, draft_envelope, timestamp

STREAM = "CONSENT"
SUBJECTS = ["consent.>"]
DECISIONS = {Decision.GRANTED: pb.DECISION_GRANTED, Decision.WITHDRAWN: pb.DECISION_WITHDRAWN}


def statement_published(statement: Statement) -> OutboxEvent:
    subject = f"consent.statement.{statement.statement_id}"
    payload = ev.StatementPublished(
        statement_id=statement.statement_id,
        version=str(statement.version),
        purpose=statement.purpose,
        title=statement.title,
        text_sha256=statement.text_sha256,
    )
    event = OutgoingEvent(
        subject=subject,
        aggregate_id=statement.statement_id,
        aggregate_version=0,
        occurred_at=statement.published_at,
        recorded_at=statement.published_at,
        payload=payload,
    )
    return OutboxEvent(subject, draft_envelope(STREAM, event))


def consent_recorded(record: ConsentRecord) -> OutboxEvent:
    subject = f"consent.subject.{record.subject_id}"
    payload = ev.ConsentRecorded(
        record_id=record.record_id,
        sequence=record.sequence,
        subject_id=record.subject_id,
        statement_id=record.statement_id,
        version=str(record.version),
        decision=DECISIONS[record.decision],
        effective_at=timestamp(record.effective_at),
        recorded_at=timestamp(record.recorded_at),
        channel=record.channel,
        site_id=record.site_id,
        record_hash=record.record_hash,
    )
    event = OutgoingEvent(
        subject=subject,
        aggregate_id=record.subject_id,
        aggregate_version=record.sequence,
        occurred_at=record.effective_at,
        recorded_at=record.recorded_at,
        payload=payload,
    )
    return OutboxEvent(subject, draft_envelope(STREAM, event))
