"""gRPC IdentityService: proto <-> application calls, nothing else.

Blocking application calls run on the thread pool (asyncio.to_thread); see
docs/adr/0001-sync-async.md.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from kizuna.identity.v1 import identity_pb2 as pb
from kizuna.identity.v1 import identity_pb2_grpc as pb_grpc
from kizuna_identity.application import IdentityApplication, parse_customer_id
from kizuna_identity.convert import customer_to_proto, profile_from_proto, site_to_proto
from kizuna_identity.domain import errors
from kizuna_identity.domain.password import WeakPassword
from kizuna_identity.domain.profile import InvalidProfile, UnknownField
from kizuna_kit.errors import ErrorCode, ErrorMap, invalid_argument
from kizuna_kit.positions import wait_until_reached
from kizuna_kit.rpc import RpcPolicy
from kizuna_kit.wire import optional_time, timestamp

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["IdentityService"].full_name

SCOPES = {
    f"/{SERVICE_NAME}/{method}": scope
    for scope, methods in {
        "identity:admin": [
            "CreateSite",
            "UpdateSitePolicy",
            "MergeCustomers",
            "EraseCustomer",
            "ExportCustomerData",
        ],
        "identity:write": [
            "RegisterCustomer",
            "Login",
            "RevokeSession",
            "UpdateProfile",
            "LinkIdentity",
            "UnlinkIdentity",
        ],
        "identity:read": [
            "GetSite",
            "ListSites",
            "ValidateSession",
            "GetCustomer",
            "ResolveIdentity",
        ],
    }.items()
    for method in methods
}

S = grpc.StatusCode
ERRORS = ErrorMap(
    domain="kizuna.identity",
    codes={
        errors.CustomerNotFound: ErrorCode(S.NOT_FOUND, "CUSTOMER_NOT_FOUND"),
        errors.SiteNotFound: ErrorCode(S.NOT_FOUND, "SITE_NOT_FOUND"),
        errors.IdentityNotLinked: ErrorCode(S.NOT_FOUND, "IDENTITY_NOT_LINKED"),
        errors.SiteExists: ErrorCode(S.ALREADY_EXISTS, "SITE_EXISTS"),
        errors.LoginIdTaken: ErrorCode(S.ALREADY_EXISTS, "LOGIN_ID_TAKEN"),
        errors.ExternalIdTaken: ErrorCode(S.ALREADY_EXISTS, "EXTERNAL_ID_TAKEN"),
        errors.NotActive: ErrorCode(S.FAILED_PRECONDITION, "CUSTOMER_NOT_ACTIVE"),
        errors.InvalidMerge: ErrorCode(S.INVALID_ARGUMENT, "INVALID_MERGE"),
        errors.MissingRequiredFields: ErrorCode(S.INVALID_ARGUMENT, "MISSING_REQUIRED_FIELDS"),
        errors.InvalidValue: ErrorCode(S.INVALID_ARGUMENT, "INVALID_VALUE"),
        UnknownField: ErrorCode(S.INVALID_ARGUMENT, "UNKNOWN_FIELD"),
        InvalidProfile: ErrorCode(S.INVALID_ARGUMENT, "INVALID_PROFILE"),
        WeakPassword: ErrorCode(S.INVALID_ARGUMENT, "WEAK_PASSWORD"),
        errors.VersionConflict: ErrorCode(S.ABORTED, "VERSION_CONFLICT"),
        errors.LoginFailed: ErrorCode(S.UNAUTHENTICATED, "LOGIN_FAILED"),
        errors.LoginLocked: ErrorCode(S.RESOURCE_EXHAUSTED, "LOGIN_LOCKED"),
        errors.SessionInvalid: ErrorCode(S.UNAUTHENTICATED, "SESSION_INVALID"),
        errors.SessionWrongGroup: ErrorCode(S.PERMISSION_DENIED, "SESSION_WRONG_SITE_GROUP"),
    },
)

POLICY = RpcPolicy(service="identity", scopes=SCOPES, errors=ERRORS)


def required(value: str, name: str) -> str:
    if not value.strip():
        raise invalid_argument("MISSING_FIELD", f"{name} is required", field=name)
    return value


class IdentityServicer(pb_grpc.IdentityServiceServicer):
    def __init__(self, app: IdentityApplication) -> None:
        self._app = app

    async def CreateSite(
        self, request: pb.CreateSiteRequest, context: Any
    ) -> pb.CreateSiteResponse:
        site, position = await asyncio.to_thread(
            self._app.create_site,
            required(request.site_id, "site_id"),
            request.display_name,
            required(request.site_group, "site_group"),
            list(request.required_fields),
        )
        return pb.CreateSiteResponse(site=site_to_proto(site), position=position)

    async def UpdateSitePolicy(
        self, request: pb.UpdateSitePolicyRequest, context: Any
    ) -> pb.UpdateSitePolicyResponse:
        site, position = await asyncio.to_thread(
            self._app.update_site_policy,
            required(request.site_id, "site_id"),
            list(request.required_fields),
        )
        return pb.UpdateSitePolicyResponse(site=site_to_proto(site), position=position)

    async def GetSite(self, request: pb.GetSiteRequest, context: Any) -> pb.GetSiteResponse:
        site = await asyncio.to_thread(self._app.get_site, required(request.site_id, "site_id"))
        return pb.GetSiteResponse(site=site_to_proto(site))

    async def ListSites(self, request: pb.ListSitesRequest, context: Any) -> pb.ListSitesResponse:
        sites = await asyncio.to_thread(self._app.list_sites, request.site_group)
        return pb.ListSitesResponse(sites=[site_to_proto(s) for s in sites])

    async def RegisterCustomer(
        self, request: pb.RegisterCustomerRequest, context: Any
    ) -> pb.RegisterCustomerResponse:
        written = await asyncio.to_thread(
            self._app.register_customer,
            required(request.site_id, "site_id"),
            required(request.login_id, "login_id"),
            required(request.password, "password"),
            profile_from_proto(request.profile),
            request.channel,
        )
        return pb.RegisterCustomerResponse(
            customer_id=str(written.aggregate_id), position=written.position
        )

    async def Login(self, request: pb.LoginRequest, context: Any) -> pb.LoginResponse:
        result = await asyncio.to_thread(
            self._app.login,
            required(request.site_id, "site_id"),
            request.login_id,
            request.password,
        )
        return pb.LoginResponse(
            customer_id=str(result.customer_id),
            session_token=result.session_token,
            expires_at=timestamp(result.expires_at),
            missing_fields=result.missing_fields,
            position=result.position,
        )

    async def ValidateSession(
        self, request: pb.ValidateSessionRequest, context: Any
    ) -> pb.ValidateSessionResponse:
        view = await asyncio.to_thread(
            self._app.validate_session,
            request.session_token,
            required(request.site_id, "site_id"),
        )
        return pb.ValidateSessionResponse(
            customer_id=str(view.customer_id),
            missing_fields=view.missing_fields,
            expires_at=timestamp(view.expires_at),
        )

    async def RevokeSession(
        self, request: pb.RevokeSessionRequest, context: Any
    ) -> pb.RevokeSessionResponse:
        position = await asyncio.to_thread(self._app.revoke_session, request.session_token)
        return pb.RevokeSessionResponse(position=position)

    async def GetCustomer(
        self, request: pb.GetCustomerRequest, context: Any
    ) -> pb.GetCustomerResponse:
        customer_id = parse_customer_id(request.customer_id)
        at = optional_time(request, "at")
        if request.wait_for_position:
            recorder = self._app.recorder
            await wait_until_reached(
                lambda: (recorder.max_notification_id() or 0) >= request.wait_for_position,
                context,
                "identity",
            )
        customer = await asyncio.to_thread(self._app.get_customer, customer_id, at)
        return pb.GetCustomerResponse(customer=customer_to_proto(customer))

    async def UpdateProfile(
        self, request: pb.UpdateProfileRequest, context: Any
    ) -> pb.UpdateProfileResponse:
        written = await asyncio.to_thread(
            self._app.update_profile,
            parse_customer_id(request.customer_id),
            profile_from_proto(request.profile),
            list(request.update_mask.paths),
            request.expected_version if request.HasField("expected_version") else None,
        )
        return pb.UpdateProfileResponse(version=written.version, position=written.position)

    async def LinkIdentity(
        self, request: pb.LinkIdentityRequest, context: Any
    ) -> pb.LinkIdentityResponse:
        written = await asyncio.to_thread(
            self._app.link_identity,
            parse_customer_id(request.customer_id),
            request.provider,
            request.external_id,
        )
        return pb.LinkIdentityResponse(version=written.version, position=written.position)

    async def UnlinkIdentity(
        self, request: pb.UnlinkIdentityRequest, context: Any
    ) -> pb.UnlinkIdentityResponse:
        written = await asyncio.to_thread(
            self._app.unlink_identity,
            parse_customer_id(request.customer_id),
            request.provider,
            request.external_id,
        )
        return pb.UnlinkIdentityResponse(version=written.version, position=written.position)

    async def ResolveIdentity(
        self, request: pb.ResolveIdentityRequest, context: Any
    ) -> pb.ResolveIdentityResponse:
        if request.login_id and (request.provider or request.external_id):
            raise invalid_argument(
                "AMBIGUOUS_LOOKUP", "give either login_id or provider and external_id"
            )
        if request.login_id:
            customer = await asyncio.to_thread(self._app.resolve_login, request.login_id)
        elif request.provider or request.external_id:
            customer = await asyncio.to_thread(
                self._app.resolve_external, request.provider, request.external_id
            )
        else:
            raise invalid_argument(
                "MISSING_FIELD", "give either login_id or provider and external_id"
            )
        return pb.ResolveIdentityResponse(customer_id=str(customer.id))

    async def MergeCustomers(
        self, request: pb.MergeCustomersRequest, context: Any
    ) -> pb.MergeCustomersResponse:
        survivor_id = parse_customer_id(request.survivor_id)
        written = await asyncio.to_thread(
            self._app.merge_customers,
            survivor_id,
            parse_customer_id(request.merged_id),
            request.reason,
        )
        survivor = await asyncio.to_thread(self._app.get_customer, survivor_id)
        return pb.MergeCustomersResponse(
            survivor=customer_to_proto(survivor), position=written.position
        )

    async def EraseCustomer(
        self, request: pb.EraseCustomerRequest, context: Any
    ) -> pb.EraseCustomerResponse:
        written = await asyncio.to_thread(
            self._app.erase_customer, parse_customer_id(request.customer_id), request.reason
        )
        return pb.EraseCustomerResponse(position=written.position)

    async def ExportCustomerData(
        self, request: pb.ExportCustomerDataRequest, context: Any
    ) -> pb.ExportCustomerDataResponse:
        customer_id = parse_customer_id(request.customer_id)
        customer = await asyncio.to_thread(self._app.get_customer, customer_id)
        history = await asyncio.to_thread(self._app.history, customer_id)
        return pb.ExportCustomerDataResponse(
            customer=customer_to_proto(customer),
            history=[
                pb.CustomerChange(
                    version=c.version, type=c.type, occurred_at=timestamp(c.occurred_at)
                )
                for c in history
            ],
            merged_ids=[str(i) for i in customer.merged_ids],
        )
