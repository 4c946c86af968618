"""Concurrent writes share commits (group commit) yet each keeps its own outcome."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from kizuna.identity.v1 import identity_pb2 as pb
from kizuna_kit.errors import error_info
from tests.integration.identity.conftest import Identity, profile

pytestmark = pytest.mark.integration


async def outcome(identity: Identity, method: str, request: object) -> object:
    try:
        return await identity.call(method, request)
    except grpc.aio.AioRpcError as error:
        info = error_info(error.trailing_metadata())
        return (error.code(), info.reason if info else None)


def registration(login: str) -> pb.RegisterCustomerRequest:
    return pb.RegisterCustomerRequest(
        site_id="shop",
        login_id=login,
        password="correct horse battery",
        profile=profile(given_name="Taro"),
        channel="ec",
    )


async def test_concurrent_writes_each_get_their_own_position_and_state(
    identity: Identity,
) -> None:
    await identity.call(
        "CreateSite", pb.CreateSiteRequest(site_id="shop", display_name="Shop", site_group="g")
    )
    registered = await asyncio.gather(
        *(identity.call("RegisterCustomer", registration(f"c{i}@example.jp")) for i in range(40))
    )
    positions = [r.position for r in registered]
    assert len(set(positions)) == 40  # two events each (customer, login key): distinct ends

    updates = await asyncio.gather(
        *(
            identity.call(
                "UpdateProfile",
                pb.UpdateProfileRequest(
                    customer_id=r.customer_id,
                    profile=profile(family_name=f"Family{i}"),
                    update_mask=FieldMask(paths=["family_name"]),
                ),
            )
            for i, r in enumerate(registered)
        )
    )
    assert len({u.position for u in updates}) == 40
    assert min(u.position for u in updates) > max(positions)
    for i, r in enumerate(registered):
        customer = await identity.call(
            "GetCustomer", pb.GetCustomerRequest(customer_id=r.customer_id)
        )
        assert customer.customer.profile.family_name == f"Family{i}"
        assert customer.customer.version == updates[i].version


async def test_a_conflict_inside_a_shared_commit_fails_only_the_loser(
    identity: Identity,
) -> None:
    await identity.call(
        "CreateSite", pb.CreateSiteRequest(site_id="shop", display_name="Shop", site_group="g")
    )
    recorder = identity.service.app.recorder
    before = recorder.max_notification_id() or 0
    outcomes = await asyncio.gather(
        *(
            outcome(identity, "RegisterCustomer", registration("same@example.jp"))
            for _ in range(12)
        ),
        *(
            outcome(identity, "RegisterCustomer", registration(f"own{i}@example.jp"))
            for i in range(12)
        ),
    )
    same, own = outcomes[:12], outcomes[12:]
    winners = [o for o in same if isinstance(o, pb.RegisterCustomerResponse)]
    assert len(winners) == 1
    assert all(
        o == (grpc.StatusCode.ALREADY_EXISTS, "LOGIN_ID_TAKEN") for o in same if o not in winners
    )
    assert all(isinstance(o, pb.RegisterCustomerResponse) for o in own)
    written = recorder.select_notifications(start=before + 1, limit=1000)
    assert len(written) == 2 * 13  # a customer and a login key per winner; losers wrote nothing
