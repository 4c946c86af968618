"""The IdentityService contract of API.md over real gRPC, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp

from kizuna.identity.v1 import identity_pb2 as pb
from kizuna_kit import positions
from tests.integration.identity.conftest import ADDRESS, Identity, profile

pytestmark = pytest.mark.integration
S = grpc.StatusCode
PASSWORD = "correct horse battery"


async def two_sites(identity: Identity) -> None:
    await identity.call(
        "CreateSite",
        pb.CreateSiteRequest(
            site_id="site-a",
            display_name="EC A",
            site_group="brand-1",
            required_fields=["given_name", "family_name"],
        ),
    )
    await identity.call(
        "CreateSite",
        pb.CreateSiteRequest(
            site_id="site-b",
            display_name="App B",
            site_group="brand-1",
            required_fields=["given_name", "family_name", "postal_address"],
        ),
    )
    await identity.call(
        "CreateSite",
        pb.CreateSiteRequest(site_id="site-x", display_name="Other brand", site_group="brand-2"),
    )


async def test_get_customer_waits_for_a_position(
    identity: Identity, monkeypatch: pytest.MonkeyPatch
) -> None:
    await two_sites(identity)
    customer_id = await register(identity, "sato@example.jp")
    updated = await identity.call(
        "UpdateProfile",
        pb.UpdateProfileRequest(customer_id=customer_id, profile=pb.Profile(given_name="Jiro")),
    )
    request = pb.GetCustomerRequest(customer_id=customer_id, wait_for_position=updated.position)
    assert (await identity.call("GetCustomer", request)).customer.profile.given_name == "Jiro"

    monkeypatch.setattr(positions, "MAX_WAIT_SECONDS", 0.3)
    request.wait_for_position = updated.position + 1_000  # nothing has recorded it
    await identity.fails("GetCustomer", request, S.DEADLINE_EXCEEDED, "POSITION_NOT_REACHED")


async def register(identity: Identity, login: str, site: str = "site-a", **fields: str) -> str:
    fields = {"given_name": "Taro", "family_name": "Tanaka", **fields}
    response = await identity.call(
        "RegisterCustomer",
        pb.RegisterCustomerRequest(
            site_id=site, login_id=login, password=PASSWORD, profile=profile(**fields), channel="ec"
        ),
    )
    assert response.position > 0
    return str(response.customer_id)


async def test_single_sign_on_and_progressive_profiling(identity: Identity) -> None:
    await two_sites(identity)
    customer_id = await register(identity, "tanaka@example.jp")
    login = await identity.call(
        "Login", pb.LoginRequest(site_id="site-a", login_id="tanaka@example.jp", password=PASSWORD)
    )
    assert login.customer_id == customer_id
    assert list(login.missing_fields) == []
    assert login.expires_at.ToDatetime(tzinfo=UTC) > datetime.now(UTC)

    at_b = await identity.call(
        "ValidateSession",
        pb.ValidateSessionRequest(session_token=login.session_token, site_id="site-b"),
    )
    assert at_b.customer_id == customer_id
    assert list(at_b.missing_fields) == ["postal_address"]

    await identity.call(
        "UpdateProfile",
        pb.UpdateProfileRequest(
            customer_id=customer_id,
            profile=pb.Profile(postal_address=ADDRESS),
            update_mask=FieldMask(paths=["postal_address"]),
        ),
    )
    at_b = await identity.call(
        "ValidateSession",
        pb.ValidateSessionRequest(session_token=login.session_token, site_id="site-b"),
    )
    assert list(at_b.missing_fields) == []

    # Another site group: the session is not valid there.
    await identity.fails(
        "ValidateSession",
        pb.ValidateSessionRequest(session_token=login.session_token, site_id="site-x"),
        S.PERMISSION_DENIED,
        "SESSION_WRONG_SITE_GROUP",
    )
    await identity.call("RevokeSession", pb.RevokeSessionRequest(session_token=login.session_token))
    await identity.fails(
        "ValidateSession",
        pb.ValidateSessionRequest(session_token=login.session_token, site_id="site-a"),
        S.UNAUTHENTICATED,
        "SESSION_INVALID",
    )


async def test_link_resolve_and_merge(identity: Identity) -> None:
    await two_sites(identity)
    tanaka = await register(identity, "tanaka@example.jp")
    await identity.call(
        "LinkIdentity",
        pb.LinkIdentityRequest(customer_id=tanaka, provider="callcenter", external_id="CC-1234"),
    )
    resolved = await identity.call(
        "ResolveIdentity", pb.ResolveIdentityRequest(provider="callcenter", external_id="CC-1234")
    )
    assert resolved.customer_id == tanaka

    other = await register(
        identity, "t.tanaka@example.com", site="site-x", phone="+81 90 1234 5678"
    )
    await identity.call(
        "LinkIdentity",
        pb.LinkIdentityRequest(customer_id=other, provider="line", external_id="U42"),
    )
    merged = await identity.call(
        "MergeCustomers",
        pb.MergeCustomersRequest(survivor_id=tanaka, merged_id=other, reason="dup"),
    )
    survivor = merged.survivor
    assert survivor.customer_id == tanaka
    assert sorted(survivor.login_ids) == ["t.tanaka@example.com", "tanaka@example.jp"]
    assert {(i.provider, i.external_id) for i in survivor.linked_identities} == {
        ("callcenter", "CC-1234"),
        ("line", "U42"),
    }
    assert set(survivor.sites) == {"site-a", "site-x"}
    assert survivor.profile.phone == "+81 90 1234 5678"  # filled from the merged customer

    for lookup in (
        pb.ResolveIdentityRequest(login_id="tanaka@example.jp"),
        pb.ResolveIdentityRequest(login_id=" T.Tanaka@Example.com "),
        pb.ResolveIdentityRequest(provider="callcenter", external_id="CC-1234"),
        pb.ResolveIdentityRequest(provider="line", external_id="U42"),
    ):
        assert (await identity.call("ResolveIdentity", lookup)).customer_id == tanaka

    gone = (await identity.call("GetCustomer", pb.GetCustomerRequest(customer_id=other))).customer
    assert gone.status == pb.CUSTOMER_STATUS_MERGED
    assert gone.merged_into == tanaka
    # The merged login now signs in as the survivor.
    login = await identity.call(
        "Login",
        pb.LoginRequest(site_id="site-x", login_id="t.tanaka@example.com", password=PASSWORD),
    )
    assert login.customer_id == tanaka

    await identity.fails(
        "MergeCustomers",
        pb.MergeCustomersRequest(survivor_id=tanaka, merged_id=other),
        S.FAILED_PRECONDITION,
        "CUSTOMER_NOT_ACTIVE",
    )
    await identity.fails(
        "MergeCustomers",
        pb.MergeCustomersRequest(survivor_id=tanaka, merged_id=tanaka),
        S.INVALID_ARGUMENT,
        "INVALID_MERGE",
    )


async def test_get_customer_at_a_past_time(identity: Identity) -> None:
    await two_sites(identity)
    customer_id = await register(identity, "tanaka@example.jp")
    between = Timestamp()
    between.FromDatetime(datetime.now(UTC))
    await identity.call(
        "UpdateProfile",
        pb.UpdateProfileRequest(customer_id=customer_id, profile=pb.Profile(given_name="Jiro")),
    )
    now = (
        await identity.call("GetCustomer", pb.GetCustomerRequest(customer_id=customer_id))
    ).customer
    then = (
        await identity.call(
            "GetCustomer", pb.GetCustomerRequest(customer_id=customer_id, at=between)
        )
    ).customer
    assert (now.profile.given_name, now.version) == ("Jiro", 2)
    assert (then.profile.given_name, then.version) == ("Taro", 1)
    before = Timestamp(seconds=1)
    await identity.fails(
        "GetCustomer",
        pb.GetCustomerRequest(customer_id=customer_id, at=before),
        S.NOT_FOUND,
        "CUSTOMER_NOT_FOUND",
    )


async def test_erasure_frees_ids_and_hides_personal_data(identity: Identity) -> None:
    await two_sites(identity)
    customer_id = await register(identity, "tanaka@example.jp", phone="+81 3 1234 5678")
    await identity.call(
        "LinkIdentity",
        pb.LinkIdentityRequest(customer_id=customer_id, provider="callcenter", external_id="CC-1"),
    )
    await identity.call(
        "EraseCustomer", pb.EraseCustomerRequest(customer_id=customer_id, reason="art. 17")
    )

    erased = (
        await identity.call("GetCustomer", pb.GetCustomerRequest(customer_id=customer_id))
    ).customer
    assert erased.status == pb.CUSTOMER_STATUS_ERASED
    assert erased.profile == pb.Profile()
    assert not erased.login_ids
    assert not erased.linked_identities
    past = Timestamp()
    past.FromDatetime(datetime.now(UTC))
    old = (
        await identity.call("GetCustomer", pb.GetCustomerRequest(customer_id=customer_id, at=past))
    ).customer
    assert old.profile == pb.Profile(), "the past of an erased customer is not shown either"
    export = await identity.call(
        "ExportCustomerData", pb.ExportCustomerDataRequest(customer_id=customer_id)
    )
    assert "Tanaka" not in str(export)
    # The phone as given and without its spaces ("1234" alone also turns up in the
    # export's timestamps: seconds 1795512340).
    assert "1234 5678" not in str(export)
    assert "12345678" not in str(export)

    await identity.fails(
        "ResolveIdentity",
        pb.ResolveIdentityRequest(login_id="tanaka@example.jp"),
        S.NOT_FOUND,
        "CUSTOMER_NOT_FOUND",
    )
    await identity.fails(
        "Login",
        pb.LoginRequest(site_id="site-a", login_id="tanaka@example.jp", password=PASSWORD),
        S.UNAUTHENTICATED,
        "LOGIN_FAILED",
    )
    # The login id and the linked id are free again.
    again = await register(identity, "tanaka@example.jp")
    assert again != customer_id
    await identity.call(
        "LinkIdentity",
        pb.LinkIdentityRequest(customer_id=again, provider="callcenter", external_id="CC-1"),
    )
    await identity.fails(
        "UpdateProfile",
        pb.UpdateProfileRequest(customer_id=customer_id, profile=pb.Profile(given_name="X")),
        S.FAILED_PRECONDITION,
        "CUSTOMER_NOT_ACTIVE",
    )


async def test_export_customer_data(identity: Identity) -> None:
    await two_sites(identity)
    customer_id = await register(identity, "tanaka@example.jp")
    export = await identity.call(
        "ExportCustomerData", pb.ExportCustomerDataRequest(customer_id=customer_id)
    )
    assert export.customer.profile.family_name == "Tanaka"
    assert [c.type for c in export.history] == ["Registered"]


async def test_site_rules(identity: Identity) -> None:
    await two_sites(identity)
    await identity.fails(
        "CreateSite",
        pb.CreateSiteRequest(site_id="site-a", display_name="Again", site_group="brand-9"),
        S.ALREADY_EXISTS,
        "SITE_EXISTS",
    )
    site = (await identity.call("GetSite", pb.GetSiteRequest(site_id="site-a"))).site
    assert (site.display_name, site.site_group) == ("EC A", "brand-1")
    await identity.fails(
        "CreateSite",
        pb.CreateSiteRequest(
            site_id="site-q", display_name="Q", site_group="g", required_fields=["shoe_size"]
        ),
        S.INVALID_ARGUMENT,
        "UNKNOWN_FIELD",
    )
    await identity.fails(
        "CreateSite",
        pb.CreateSiteRequest(site_id="Bad Id!", display_name="Q", site_group="g"),
        S.INVALID_ARGUMENT,
        "INVALID_VALUE",
    )
    await identity.fails(
        "GetSite", pb.GetSiteRequest(site_id="nope"), S.NOT_FOUND, "SITE_NOT_FOUND"
    )
    listed = await identity.call("ListSites", pb.ListSitesRequest(site_group="brand-1"))
    assert [s.site_id for s in listed.sites] == ["site-a", "site-b"]


async def test_policy_change_applies_from_now_on(identity: Identity) -> None:
    await two_sites(identity)
    customer_id = await register(identity, "tanaka@example.jp")
    await identity.call(
        "UpdateSitePolicy",
        pb.UpdateSitePolicyRequest(
            site_id="site-a",
            required_fields=["given_name", "family_name", "attributes.member_rank"],
        ),
    )
    # Old registrations keep working and learn what is missing now.
    login = await identity.call(
        "Login", pb.LoginRequest(site_id="site-a", login_id="tanaka@example.jp", password=PASSWORD)
    )
    assert login.customer_id == customer_id
    assert list(login.missing_fields) == ["attributes.member_rank"]
    error = await identity.fails(
        "RegisterCustomer",
        pb.RegisterCustomerRequest(
            site_id="site-a",
            login_id="new@example.jp",
            password=PASSWORD,
            profile=profile(given_name="Hanako", family_name="Sato"),
        ),
        S.INVALID_ARGUMENT,
        "MISSING_REQUIRED_FIELDS",
    )
    assert "attributes.member_rank" in (error.details() or "")


async def test_register_errors_change_nothing(identity: Identity) -> None:
    await two_sites(identity)
    await register(identity, "tanaka@example.jp")
    await identity.fails(
        "RegisterCustomer",
        pb.RegisterCustomerRequest(
            site_id="site-x",
            login_id="  TANAKA@example.JP",
            password=PASSWORD,
            profile=profile(given_name="Other"),
        ),
        S.ALREADY_EXISTS,
        "LOGIN_ID_TAKEN",
    )
    error = await identity.fails(
        "RegisterCustomer",
        pb.RegisterCustomerRequest(
            site_id="site-b",
            login_id="sato@example.jp",
            password=PASSWORD,
            profile=profile(given_name="Hanako"),
        ),
        S.INVALID_ARGUMENT,
        "MISSING_REQUIRED_FIELDS",
    )
    assert "family_name" in (error.details() or "")
    assert "postal_address" in (error.details() or "")
    for weak in ("short", "password123", "aaaaaaaaaaaa", "sato1234-sato@example"):
        await identity.fails(
            "RegisterCustomer",
            pb.RegisterCustomerRequest(
                site_id="site-a",
                login_id="sato@example.jp",
                password=weak,
                profile=profile(given_name="Hanako", family_name="Sato"),
            ),
            S.INVALID_ARGUMENT,
            "WEAK_PASSWORD",
        )
    await identity.fails(
        "RegisterCustomer",
        pb.RegisterCustomerRequest(
            site_id="site-a",
            login_id="not-an-email",
            password=PASSWORD,
            profile=profile(given_name="Hanako", family_name="Sato"),
        ),
        S.INVALID_ARGUMENT,
        "INVALID_PROFILE",
    )
    await identity.fails(
        "RegisterCustomer",
        pb.RegisterCustomerRequest(
            site_id="nowhere",
            login_id="sato@example.jp",
            password=PASSWORD,
            profile=profile(given_name="Hanako", family_name="Sato"),
        ),
        S.NOT_FOUND,
        "SITE_NOT_FOUND",
    )
    await identity.fails(
        "RegisterCustomer",
        pb.RegisterCustomerRequest(
            site_id="site-a",
            login_id="sato@example.jp",
            password=PASSWORD,
            profile=profile(given_name="Hanako", family_name="Sato", birthdate="2999-01-01"),
        ),
        S.INVALID_ARGUMENT,
        "INVALID_PROFILE",
    )


async def test_login_failures_are_indistinguishable_and_lock(identity: Identity) -> None:
    await two_sites(identity)
    await register(identity, "tanaka@example.jp")
    wrong = await identity.fails(
        "Login",
        pb.LoginRequest(site_id="site-a", login_id="tanaka@example.jp", password="wrong password!"),
        S.UNAUTHENTICATED,
        "LOGIN_FAILED",
    )
    unknown = await identity.fails(
        "Login",
        pb.LoginRequest(site_id="site-a", login_id="nobody@example.jp", password="wrong password!"),
        S.UNAUTHENTICATED,
        "LOGIN_FAILED",
    )
    assert wrong.details() == unknown.details()
    for _ in range(4):
        await identity.fails(
            "Login",
            pb.LoginRequest(
                site_id="site-a", login_id="tanaka@example.jp", password="nope nope nope"
            ),
            S.UNAUTHENTICATED,
            "LOGIN_FAILED",
        )
    # Locked now, even with the right password.
    await identity.fails(
        "Login",
        pb.LoginRequest(site_id="site-a", login_id="tanaka@example.jp", password=PASSWORD),
        S.RESOURCE_EXHAUSTED,
        "LOGIN_LOCKED",
    )


async def test_profile_and_link_errors(identity: Identity) -> None:
    await two_sites(identity)
    tanaka = await register(identity, "tanaka@example.jp")
    sato = await register(identity, "sato@example.jp", given_name="Hanako", family_name="Sato")
    await identity.call(
        "LinkIdentity",
        pb.LinkIdentityRequest(customer_id=tanaka, provider="callcenter", external_id="CC-1"),
    )
    await identity.fails(
        "LinkIdentity",
        pb.LinkIdentityRequest(customer_id=sato, provider="callcenter", external_id="CC-1"),
        S.ALREADY_EXISTS,
        "EXTERNAL_ID_TAKEN",
    )
    await identity.fails(
        "UnlinkIdentity",
        pb.UnlinkIdentityRequest(customer_id=sato, provider="callcenter", external_id="CC-1"),
        S.NOT_FOUND,
        "IDENTITY_NOT_LINKED",
    )
    await identity.call(
        "UnlinkIdentity",
        pb.UnlinkIdentityRequest(customer_id=tanaka, provider="callcenter", external_id="CC-1"),
    )
    await identity.fails(
        "ResolveIdentity",
        pb.ResolveIdentityRequest(provider="callcenter", external_id="CC-1"),
        S.NOT_FOUND,
        "CUSTOMER_NOT_FOUND",
    )
    await identity.fails(
        "UpdateProfile",
        pb.UpdateProfileRequest(
            customer_id=tanaka, profile=pb.Profile(phone="x"), expected_version=99
        ),
        S.ABORTED,
        "VERSION_CONFLICT",
    )
    version = (
        await identity.call("GetCustomer", pb.GetCustomerRequest(customer_id=tanaka))
    ).customer.version
    updated = await identity.call(
        "UpdateProfile",
        pb.UpdateProfileRequest(
            customer_id=tanaka,
            profile=pb.Profile(phone="+81 3 0000 0000"),
            expected_version=version,
        ),
    )
    assert updated.version == version + 1
    await identity.fails(
        "UpdateProfile",
        pb.UpdateProfileRequest(
            customer_id=tanaka, profile=pb.Profile(), update_mask=FieldMask(paths=["shoe_size"])
        ),
        S.INVALID_ARGUMENT,
        "UNKNOWN_FIELD",
    )
    await identity.fails(
        "GetCustomer",
        pb.GetCustomerRequest(customer_id="not-a-uuid"),
        S.INVALID_ARGUMENT,
        "INVALID_VALUE",
    )
    await identity.fails(
        "GetCustomer",
        pb.GetCustomerRequest(customer_id="00000000-0000-4000-8000-000000000000"),
        S.NOT_FOUND,
        "CUSTOMER_NOT_FOUND",
    )
    await identity.fails(
        "ResolveIdentity", pb.ResolveIdentityRequest(), S.INVALID_ARGUMENT, "MISSING_FIELD"
    )


async def test_credentials_and_scopes(identity: Identity) -> None:
    await two_sites(identity)
    customer_id = await register(identity, "tanaka@example.jp")
    before = identity.position()
    with pytest.raises(grpc.aio.AioRpcError) as no_key:
        await identity.stub.GetCustomer(pb.GetCustomerRequest(customer_id=customer_id))
    assert no_key.value.code() == S.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as bad_key:
        await identity.stub.GetCustomer(
            pb.GetCustomerRequest(customer_id=customer_id),
            metadata=(("authorization", "Bearer kz.admin.forged-secret"),),
        )
    assert bad_key.value.code() == S.UNAUTHENTICATED
    # The auditor reads but cannot write.
    read = await identity.call(
        "GetCustomer", pb.GetCustomerRequest(customer_id=customer_id), identity.keys.auditor
    )
    assert read.customer.customer_id == customer_id
    await identity.fails(
        "UpdateProfile",
        pb.UpdateProfileRequest(customer_id=customer_id, profile=pb.Profile(given_name="Evil")),
        S.PERMISSION_DENIED,
        "PERMISSION_DENIED",
        token=identity.keys.auditor,
    )
    await identity.fails(
        "EraseCustomer",
        pb.EraseCustomerRequest(customer_id=customer_id),
        S.PERMISSION_DENIED,
        "PERMISSION_DENIED",
        token=identity.keys.writer,
    )
    assert identity.position() == before
    after = (
        await identity.call("GetCustomer", pb.GetCustomerRequest(customer_id=customer_id))
    ).customer
    assert after.profile.given_name == "Taro"
    assert after.status == pb.CUSTOMER_STATUS_ACTIVE
