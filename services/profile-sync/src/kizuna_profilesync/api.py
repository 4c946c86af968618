"""gRPC ProfileSyncService: proto <-> application calls, nothing else."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from kizuna.profilesync.v1 import profilesync_pb2 as pb
from kizuna.profilesync.v1 import profilesync_pb2_grpc as pb_grpc
from kizuna_kit.errors import ErrorCode, ErrorMap, RequestError, invalid_argument
from kizuna_kit.positions import wait_until_reached
from kizuna_kit.rpc import RpcPolicy
from kizuna_kit.wire import timestamp
from kizuna_profilesync.application import NotAnExportConnector, ProfileSyncApplication
from kizuna_profilesync.domain import connector as domain
from kizuna_profilesync.domain.connector import Connector, ConnectorKind, Settings
from kizuna_profilesync.domain.profile import (
    ConsentStatus,
    PostalAddress,
    Profile,
    ProfileStatus,
    UnknownField,
)
from kizuna_profilesync.domain.projection import CONSENT_STREAM, IDENTITY_STREAM
from kizuna_profilesync.domain.webhooks import InvalidSecret
from kizuna_profilesync.storage.interface import RewindNotSettled

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ProfileSyncService"].full_name

SCOPES = {
    f"/{SERVICE_NAME}/{method}": scope
    for scope, methods in {
        "profilesync:admin": [
            "CreateConnector",
            "UpdateConnector",
            "PauseConnector",
            "ResumeConnector",
            "DeleteConnector",
            "ReplayConnector",
            "RunExport",
            "RetryDeadLetters",
        ],
        "profilesync:read": [
            "ListConnectors",
            "GetConnectorStatus",
            "GetProfile",
            "ListDeadLetters",
        ],
    }.items()
    for method in methods
}

S = grpc.StatusCode
ERRORS = ErrorMap(
    domain="kizuna.profilesync",
    codes={
        domain.ConnectorNotFound: ErrorCode(S.NOT_FOUND, "CONNECTOR_NOT_FOUND"),
        domain.ConnectorExists: ErrorCode(S.ALREADY_EXISTS, "CONNECTOR_EXISTS"),
        domain.InvalidConnector: ErrorCode(S.INVALID_ARGUMENT, "INVALID_CONNECTOR"),
        NotAnExportConnector: ErrorCode(S.FAILED_PRECONDITION, "NOT_AN_EXPORT_CONNECTOR"),
        RewindNotSettled: ErrorCode(S.FAILED_PRECONDITION, "REWIND_NOT_SETTLED"),
        InvalidSecret: ErrorCode(S.INVALID_ARGUMENT, "INVALID_SECRET"),
        UnknownField: ErrorCode(S.INVALID_ARGUMENT, "UNKNOWN_FIELD"),
    },
)
POLICY = RpcPolicy(service="profilesync", scopes=SCOPES, errors=ERRORS)

KINDS = {pb.CONNECTOR_KIND_WEBHOOK: "WEBHOOK", pb.CONNECTOR_KIND_FILE_EXPORT: "FILE_EXPORT"}
KINDS_OUT = {ConnectorKind(v): k for k, v in KINDS.items()}
FORMATS = {pb.EXPORT_FORMAT_JSONL: "JSONL", pb.EXPORT_FORMAT_CSV: "CSV"}
FORMATS_OUT = {v: k for k, v in FORMATS.items()}
CONSENT_STATUS = {
    ConsentStatus.GRANTED: pb.CONSENT_STATUS_GRANTED,
    ConsentStatus.WITHDRAWN: pb.CONSENT_STATUS_WITHDRAWN,
    ConsentStatus.OUTDATED: pb.CONSENT_STATUS_OUTDATED,
}
PROFILE_STATUS = {
    ProfileStatus.ACTIVE: pb.PROFILE_STATUS_ACTIVE,
    ProfileStatus.MERGED: pb.PROFILE_STATUS_MERGED,
    ProfileStatus.ERASED: pb.PROFILE_STATUS_ERASED,
}


def not_found(what: str) -> RequestError:
    return RequestError(S.NOT_FOUND, "PROFILE_NOT_FOUND", f"no profile for this {what}")


def settings_from(request: Any) -> tuple[Settings, str]:
    """The settings of a create/update request and the plain secret (sealed later)."""
    return (
        Settings(
            webhook_url=request.webhook.url,
            directory=request.file_export.directory,
            export_format=FORMATS.get(request.file_export.format, ""),
            event_types=tuple(request.event_types),
            required_statements=tuple(request.required_statements),
            fields=tuple(request.fields),
        ),
        request.webhook.secret,
    )


def connector_to_proto(connector: Connector) -> pb.Connector:
    settings = connector.settings
    message = pb.Connector(
        connector_id=connector.connector_id,
        kind=KINDS_OUT[connector.kind],
        event_types=settings.event_types,
        required_statements=settings.required_statements,
        fields=settings.fields,
        paused=connector.paused,
        paused_reason=connector.paused_reason,
        version=connector.version,
        created_at=timestamp(connector.created_on),
        updated_at=timestamp(connector.modified_on),
    )
    if connector.kind == ConnectorKind.WEBHOOK:
        message.webhook.url = settings.webhook_url  # the secret never leaves
    else:
        message.file_export.directory = settings.directory
        message.file_export.format = FORMATS_OUT.get(
            settings.export_format, pb.EXPORT_FORMAT_UNSPECIFIED
        )
    return message


def profile_to_proto(profile: Profile) -> pb.Profile:
    fields = profile.fields
    message = pb.Profile(
        customer_id=profile.customer_id,
        status=PROFILE_STATUS[profile.status],
        given_name=fields.given_name,
        family_name=fields.family_name,
        phone=fields.phone,
        birthdate=fields.birthdate,
        locale=fields.locale,
        attributes=dict(fields.attributes),
        login_ids=profile.login_ids,
        linked_identities=[
            pb.LinkedIdentity(provider=i.provider, external_id=i.external_id)
            for i in profile.linked_identities
        ],
        sites=profile.sites,
        merged_into=profile.merged_into,
    )
    address = fields.postal_address
    if address != PostalAddress():
        message.postal_address.CopyFrom(
            pb.PostalAddress(
                postal_code=address.postal_code,
                region=address.region,
                locality=address.locality,
                street=address.street,
                country=address.country,
            )
        )
    for statement_id, entry in sorted(profile.consents.items()):
        message.consents.add(
            statement_id=statement_id,
            status=CONSENT_STATUS[entry.status],
            version=entry.version,
            effective_at=timestamp(entry.effective_at),
        )
    if profile.updated_at is not None:
        message.updated_at.CopyFrom(timestamp(profile.updated_at))
    return message


class ProfileSyncServicer(pb_grpc.ProfileSyncServiceServicer):
    def __init__(self, app: ProfileSyncApplication) -> None:
        self._app = app

    async def CreateConnector(
        self, request: pb.CreateConnectorRequest, context: Any
    ) -> pb.CreateConnectorResponse:
        kind = KINDS.get(request.kind)
        if kind is None:
            raise invalid_argument("INVALID_CONNECTOR", "kind must be WEBHOOK or FILE_EXPORT")
        settings, secret = settings_from(request)
        connector = await asyncio.to_thread(
            self._app.connectors.create, request.connector_id, kind, settings, secret
        )
        return pb.CreateConnectorResponse(connector=connector_to_proto(connector))

    async def UpdateConnector(
        self, request: pb.UpdateConnectorRequest, context: Any
    ) -> pb.UpdateConnectorResponse:
        settings, secret = settings_from(request)
        connector = await asyncio.to_thread(
            self._app.connectors.update, request.connector_id, settings, secret
        )
        return pb.UpdateConnectorResponse(connector=connector_to_proto(connector))

    async def PauseConnector(
        self, request: pb.PauseConnectorRequest, context: Any
    ) -> pb.PauseConnectorResponse:
        connector = await asyncio.to_thread(
            self._app.connectors.pause, request.connector_id, request.reason or "paused by operator"
        )
        return pb.PauseConnectorResponse(connector=connector_to_proto(connector))

    async def ResumeConnector(
        self, request: pb.ResumeConnectorRequest, context: Any
    ) -> pb.ResumeConnectorResponse:
        connector = await asyncio.to_thread(self._app.connectors.resume, request.connector_id)
        return pb.ResumeConnectorResponse(connector=connector_to_proto(connector))

    async def DeleteConnector(
        self, request: pb.DeleteConnectorRequest, context: Any
    ) -> pb.DeleteConnectorResponse:
        await asyncio.to_thread(self._app.delete_connector, request.connector_id)
        return pb.DeleteConnectorResponse()

    async def ListConnectors(
        self, request: pb.ListConnectorsRequest, context: Any
    ) -> pb.ListConnectorsResponse:
        live = await asyncio.to_thread(self._app.connectors.live)
        return pb.ListConnectorsResponse(
            connectors=[connector_to_proto(live[k]) for k in sorted(live)]
        )

    async def GetConnectorStatus(
        self, request: pb.GetConnectorStatusRequest, context: Any
    ) -> pb.GetConnectorStatusResponse:
        status = await asyncio.to_thread(self._app.status, request.connector_id)
        counts = status.counts
        return pb.GetConnectorStatusResponse(
            connector_id=request.connector_id,
            position=status.position,
            lag=status.lag,
            delivered=counts.delivered,
            pending=counts.pending,
            failed=counts.failed,
            dead_lettered=counts.dead,
            last_error=counts.last_error,
            paused=status.paused,
        )

    async def ReplayConnector(
        self, request: pb.ReplayConnectorRequest, context: Any
    ) -> pb.ReplayConnectorResponse:
        queued = await asyncio.to_thread(
            self._app.replay, request.connector_id, request.from_position
        )
        return pb.ReplayConnectorResponse(queued=queued)

    async def RunExport(self, request: pb.RunExportRequest, context: Any) -> pb.RunExportResponse:
        export = await asyncio.to_thread(self._app.run_export, request.connector_id)
        return pb.RunExportResponse(path=str(export.path), rows=export.rows)

    async def GetProfile(
        self, request: pb.GetProfileRequest, context: Any
    ) -> pb.GetProfileResponse:
        if not request.customer_id:
            raise invalid_argument("MISSING_FIELD", "customer_id is required", field="customer_id")
        wanted = {
            IDENTITY_STREAM: request.wait_for_position,
            CONSENT_STREAM: request.wait_for_consent_position,
        }
        positions: dict[str, int] = {}

        def reached() -> bool:
            # Read before the profile: what the answer reports, the profile holds at least.
            positions.update(self._app.store.positions())
            return all(positions.get(s, 0) >= p for s, p in wanted.items())

        await wait_until_reached(reached, context, "the projection")
        profile = await asyncio.to_thread(self._app.profile, request.customer_id)
        if profile is None or not profile.registered or profile.status == ProfileStatus.ERASED:
            raise not_found("customer")  # an erased person is not shown again
        return pb.GetProfileResponse(
            profile=profile_to_proto(profile),
            identity_position=positions.get(IDENTITY_STREAM, 0),
            consent_position=positions.get(CONSENT_STREAM, 0),
        )

    async def ListDeadLetters(
        self, request: pb.ListDeadLettersRequest, context: Any
    ) -> pb.ListDeadLettersResponse:
        limit = min(request.page_size or 100, 1000)
        after = page_after(request.page_token)
        found = await asyncio.to_thread(
            self._app.dead_letters, request.connector_id, limit + 1, after
        )
        page = found[:limit]
        return pb.ListDeadLettersResponse(
            dead_letters=[
                pb.DeadLetter(
                    delivery_id=d.delivery_id,
                    customer_id=d.customer_id,
                    position=d.seq,
                    type=d.type,
                    attempts=d.attempts,
                    last_error=d.last_error,
                    failed_at=timestamp(d.updated_at),
                )
                for d in page
            ],
            next_page_token=f"{page[-1].seq}:{page[-1].delivery_id}" if len(found) > limit else "",
        )

    async def RetryDeadLetters(
        self, request: pb.RetryDeadLettersRequest, context: Any
    ) -> pb.RetryDeadLettersResponse:
        count = await asyncio.to_thread(self._app.retry_dead_letters, request.connector_id)
        return pb.RetryDeadLettersResponse(requeued=count)


def page_after(token: str) -> tuple[int, str]:
    """A ListDeadLetters page token, `<seq>:<delivery id>` of the last dead letter shown;
    anything else starts at the beginning."""
    seq, sep, delivery_id = token.partition(":")
    return (int(seq), delivery_id) if sep and seq.isdigit() else (0, "")
