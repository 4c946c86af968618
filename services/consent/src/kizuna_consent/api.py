"""gRPC ConsentService: proto <-> application calls, nothing else."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import grpc

from kizuna.consent.v1 import consent_pb2 as pb
from kizuna.consent.v1 import consent_pb2_grpc as pb_grpc
from kizuna_consent import application as app_errors
from kizuna_consent.application import Checked, ConsentApplication, ConsentRequest, ExportRow
from kizuna_consent.domain import instants, records, statements
from kizuna_consent.domain.checkpoint import Checkpoint, encode_checkpoint
from kizuna_consent.domain.errors import ConsentError
from kizuna_consent.domain.instants import canonical_instant
from kizuna_consent.domain.records import ConsentRecord, Decision
from kizuna_consent.domain.state import ConsentStatus
from kizuna_consent.domain.statements import Statement
from kizuna_consent.evidence import Evidence
from kizuna_consent.storage.interface import Appended, SubjectErased
from kizuna_kit.errors import ErrorCode, ErrorMap, invalid_argument
from kizuna_kit.group_commit import GroupCommit
from kizuna_kit.rpc import RpcPolicy
from kizuna_kit.streaming import stream_in_thread
from kizuna_kit.wire import optional_time, timestamp

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ConsentService"].full_name

SCOPES = {
    f"/{SERVICE_NAME}/{method}": scope
    for scope, methods in {
        "consent:write": ["PublishStatement", "RecordConsent"],
        "consent:read": ["GetStatement", "ListStatements", "GetConsentState"],
        "consent:audit": [
            "ListConsentHistory",
            "ExportConsentState",
            "VerifyLedger",
            "GetCheckpoint",
            "GetRecordProof",
            "ExportLedger",
        ],
    }.items()
    for method in methods
}

S = grpc.StatusCode
ERRORS = ErrorMap(
    domain="kizuna.consent",
    codes={
        app_errors.StatementNotFound: ErrorCode(S.NOT_FOUND, "STATEMENT_NOT_FOUND"),
        app_errors.RecordNotFound: ErrorCode(S.NOT_FOUND, "RECORD_NOT_FOUND"),
        SubjectErased: ErrorCode(S.FAILED_PRECONDITION, "SUBJECT_ERASED"),
        app_errors.EffectiveAtInFuture: ErrorCode(S.INVALID_ARGUMENT, "EFFECTIVE_AT_IN_FUTURE"),
        records.EffectiveInFuture: ErrorCode(S.INVALID_ARGUMENT, "EFFECTIVE_AT_IN_FUTURE"),
        statements.StatementVersionExists: ErrorCode(S.ALREADY_EXISTS, "STATEMENT_VERSION_EXISTS"),
        statements.InvalidStatementId: ErrorCode(S.INVALID_ARGUMENT, "INVALID_STATEMENT_ID"),
        statements.InvalidVersion: ErrorCode(S.INVALID_ARGUMENT, "INVALID_VERSION"),
        statements.InvalidStatement: ErrorCode(S.INVALID_ARGUMENT, "INVALID_STATEMENT"),
        instants.NaiveDatetime: ErrorCode(S.INVALID_ARGUMENT, "INVALID_TIME"),
        instants.InvalidInstant: ErrorCode(S.INVALID_ARGUMENT, "INVALID_TIME"),
        app_errors.InvalidRequest: ErrorCode(S.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
        app_errors.IdempotencyKeyReused: ErrorCode(S.FAILED_PRECONDITION, "IDEMPOTENCY_KEY_REUSED"),
        records.InvalidRecord: ErrorCode(S.INVALID_ARGUMENT, "INVALID_RECORD"),
    },
)

POLICY = RpcPolicy(service="consent", scopes=SCOPES, errors=ERRORS)

DECISIONS = {pb.DECISION_GRANTED: Decision.GRANTED, pb.DECISION_WITHDRAWN: Decision.WITHDRAWN}
DECISIONS_OUT = {v: k for k, v in DECISIONS.items()}
STATUSES = {
    ConsentStatus.NOT_GIVEN: pb.CONSENT_STATUS_NOT_GIVEN,
    ConsentStatus.GRANTED: pb.CONSENT_STATUS_GRANTED,
    ConsentStatus.WITHDRAWN: pb.CONSENT_STATUS_WITHDRAWN,
    ConsentStatus.OUTDATED: pb.CONSENT_STATUS_OUTDATED,
}


def statement_to_proto(statement: Statement) -> pb.Statement:
    return pb.Statement(
        statement_id=statement.statement_id,
        version=str(statement.version),
        purpose=statement.purpose,
        title=statement.title,
        text=statement.text,
        text_sha256=statement.text_sha256,
        published_at=timestamp(statement.published_at),
    )


def checkpoint_to_proto(checkpoint: Checkpoint) -> pb.Checkpoint:
    return pb.Checkpoint(
        size=checkpoint.size,
        root_hash=checkpoint.root_hash,
        timestamp=timestamp(checkpoint.timestamp),
        key_id=checkpoint.key_id,
        signature=checkpoint.signature,
        text=encode_checkpoint(checkpoint),
    )


class ConsentServicer(pb_grpc.ConsentServiceServicer):
    def __init__(self, app: ConsentApplication) -> None:
        self._app = app
        self._records: GroupCommit[Checked, Appended | ConsentError] = GroupCommit(app.record)

    async def PublishStatement(
        self, request: pb.PublishStatementRequest, context: Any
    ) -> pb.PublishStatementResponse:
        statement = await asyncio.to_thread(
            self._app.publish_statement,
            request.statement_id,
            request.version,
            request.purpose,
            request.title,
            request.text,
        )
        return pb.PublishStatementResponse(
            statement=statement_to_proto(statement), text_sha256=statement.text_sha256
        )

    async def GetStatement(
        self, request: pb.GetStatementRequest, context: Any
    ) -> pb.GetStatementResponse:
        statement = await asyncio.to_thread(
            self._app.get_statement, request.statement_id, request.version
        )
        return pb.GetStatementResponse(statement=statement_to_proto(statement))

    async def ListStatements(
        self, request: pb.ListStatementsRequest, context: Any
    ) -> pb.ListStatementsResponse:
        found = await asyncio.to_thread(
            self._app.store.list_statements, request.statement_id or None
        )
        return pb.ListStatementsResponse(statements=[statement_to_proto(s) for s in found])

    async def RecordConsent(
        self, request: pb.RecordConsentRequest, context: Any
    ) -> pb.RecordConsentResponse:
        decision = DECISIONS.get(request.decision)
        if decision is None:
            raise invalid_argument("INVALID_DECISION", "decision must be GRANTED or WITHDRAWN")
        consent = ConsentRequest(
            subject_id=request.subject_id,
            statement_id=request.statement_id,
            version=request.version,
            decision=decision,
            effective_at=optional_time(request, "effective_at"),
            channel=request.channel,
            site_id=request.site_id,
            evidence=Evidence(
                ip=request.evidence.ip,
                user_agent=request.evidence.user_agent,
                collected_by=request.evidence.collected_by,
                proof_ref=request.evidence.proof_ref,
            ),
            idempotency_key=request.idempotency_key or None,
        )
        # The common case has no thread hop nor a read of its own: the statement version
        # is known. Either way the subject is resolved in the transaction that appends
        # the group, under the writers' lock that merges and erasures take too.
        if consent.idempotency_key or not self._app.knows_statement(
            consent.statement_id, consent.version
        ):
            prepared = await asyncio.to_thread(self._app.prepare, consent)
        else:
            prepared = self._app.check(consent)
        recorded = (
            prepared if isinstance(prepared, Appended) else await self._records.submit(prepared)
        )
        if isinstance(recorded, ConsentError):  # (raised by submit, in fact)
            raise recorded
        record = recorded.record
        return pb.RecordConsentResponse(
            record_id=record.record_id,
            sequence=record.sequence,
            record_hash=record.record_hash,
            recorded_at=timestamp(record.recorded_at),
            subject_id=record.subject_id,
        )

    async def GetConsentState(
        self, request: pb.GetConsentStateRequest, context: Any
    ) -> pb.GetConsentStateResponse:
        subject, entries = await asyncio.to_thread(
            self._app.state,
            request.subject_id,
            optional_time(request, "at"),
            optional_time(request, "as_known_at"),
        )
        response = pb.GetConsentStateResponse(subject_id=subject)
        for item in entries:
            out = response.entries.add(statement_id=item.statement_id, status=STATUSES[item.status])
            if item.entry is not None:
                out.version = str(item.entry.version)
                out.effective_at.CopyFrom(timestamp(item.entry.effective_at))
                out.recorded_at.CopyFrom(timestamp(item.entry.recorded_at))
                out.record_id = item.entry.record_id
        return response

    async def ListConsentHistory(
        self, request: pb.ListConsentHistoryRequest, context: Any
    ) -> AsyncIterator[pb.ListConsentHistoryResponse]:
        async for item in stream_in_thread(lambda: self._app.history(request.subject_id)):
            record, opened = item.record, item.evidence
            yield pb.ListConsentHistoryResponse(
                record=pb.ConsentRecord(
                    record_id=record.record_id,
                    sequence=record.sequence,
                    subject_id=record.subject_id,
                    statement_id=record.statement_id,
                    version=str(record.version),
                    decision=DECISIONS_OUT[record.decision],
                    effective_at=timestamp(record.effective_at),
                    recorded_at=timestamp(record.recorded_at),
                    channel=record.channel,
                    site_id=record.site_id,
                    evidence=pb.Evidence(**vars(opened.evidence)),
                    evidence_shredded=opened.shredded,
                    prev_hash=record.prev_hash,
                    record_hash=record.record_hash,
                )
            )

    async def ExportConsentState(
        self, request: pb.ExportConsentStateRequest, context: Any
    ) -> AsyncIterator[pb.ExportConsentStateResponse]:
        at = optional_time(request, "at")
        as_known_at = optional_time(request, "as_known_at")

        def messages() -> Iterator[pb.ExportConsentStateResponse]:
            # Built on the stream's own thread, one message per batch of rows.
            for batch in self._app.export_batches(at, as_known_at, request.statement_id or None):
                yield export_message(batch)

        async for message in stream_in_thread(messages, chunk=1):
            yield message

    async def VerifyLedger(
        self, request: pb.VerifyLedgerRequest, context: Any
    ) -> pb.VerifyLedgerResponse:
        result = await asyncio.to_thread(self._app.verify)
        return pb.VerifyLedgerResponse(
            ok=result.ok,
            records_checked=result.records_checked,
            root_hash=result.root_hash,
            first_bad_sequence=result.first_bad_sequence or 0,
            reason=result.reason or "",
        )

    async def GetCheckpoint(
        self, request: pb.GetCheckpointRequest, context: Any
    ) -> pb.GetCheckpointResponse:
        checkpoint = await asyncio.to_thread(self._app.checkpoint)
        return pb.GetCheckpointResponse(
            checkpoint=checkpoint_to_proto(checkpoint), public_key=self._app.public_key
        )

    async def GetRecordProof(
        self, request: pb.GetRecordProofRequest, context: Any
    ) -> pb.GetRecordProofResponse:
        proof = await asyncio.to_thread(
            self._app.proof, request.record_id, request.checkpoint_size or None
        )
        return pb.GetRecordProofResponse(
            leaf_index=proof.leaf_index,
            record_hash=proof.record_hash,
            audit_path=proof.audit_path,
            checkpoint=checkpoint_to_proto(proof.checkpoint),
        )

    async def ExportLedger(
        self, request: pb.ExportLedgerRequest, context: Any
    ) -> AsyncIterator[pb.ExportLedgerResponse]:
        async for record in stream_in_thread(self._app.store.records):
            yield ledger_row(record)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def export_message(batch: list[ExportRow]) -> pb.ExportConsentStateResponse:
    message = pb.ExportConsentStateResponse()
    # Filling rows added in place costs a third of building each row (and its Timestamp)
    # as a message of its own and copying it in.
    add = message.states.add
    for subject, statement, status, version, effective_at in batch:
        state = add()
        state.subject_id = subject
        state.statement_id = statement
        state.status = STATUSES[status]
        state.version = version
        # Whole seconds and the microseconds of the instant, exactly (no float).
        since = effective_at - EPOCH
        when = state.effective_at
        when.seconds = since.days * 86400 + since.seconds
        when.nanos = since.microseconds * 1000
    return message


def ledger_row(record: ConsentRecord) -> pb.ExportLedgerResponse:
    return pb.ExportLedgerResponse(
        sequence=record.sequence,
        record_id=record.record_id,
        subject_id=record.subject_id,
        statement_id=record.statement_id,
        version=str(record.version),
        decision=str(record.decision),
        effective_at=canonical_instant(record.effective_at),
        recorded_at=canonical_instant(record.recorded_at),
        channel=record.channel,
        site_id=record.site_id,
        evidence=record.evidence,
        idempotency_key=record.idempotency_key or "",
        has_idempotency_key=record.idempotency_key is not None,
        prev_hash=record.prev_hash,
        record_hash=record.record_hash,
    )
