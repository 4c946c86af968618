"""After EraseCustomer, no personal data of the erased stays at rest in identity: not in
its event store (SQLite or PostgreSQL) and not in stream IDENTITY (real nats-server),
while everyone else's events stay as they were."""

from __future__ import annotations

from uuid import UUID

import nats
import pytest
from nats.js.errors import NotFoundError

from kizuna.events.v1.envelope_pb2 import Envelope
from kizuna.identity.v1 import events_pb2 as ev
from kizuna.identity.v1 import identity_pb2 as pb
from kizuna_identity.domain.keys import external_key_id, login_key_id
from kizuna_identity.wire import STREAM
from kizuna_kit.natsd import NatsServer
from kizuna_kit.testing.waiting import eventually
from tests.integration.identity.conftest import PASSWORD, Identity, profile

pytestmark = pytest.mark.integration

PERSONAL = ["tanaka", "suzuki", "Taro", "Jiro", "5555-0199", "LINE-42", "$argon2"]


async def register(identity: Identity, login: str, **fields: str) -> str:
    reply = await identity.call(
        "RegisterCustomer",
        pb.RegisterCustomerRequest(
            site_id="shop", login_id=login, password=PASSWORD, profile=profile(**fields)
        ),
    )
    return str(reply.customer_id)


async def stream_messages(url: str) -> dict[str, list[Envelope]]:
    """The events stream IDENTITY still holds, per subject."""
    client = await nats.connect(url)
    try:
        js = client.jetstream()
        info = await js.stream_info(STREAM)
        held: dict[str, list[Envelope]] = {}
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            try:
                msg = await js.get_msg(STREAM, seq=seq)
            except NotFoundError:
                continue
            held.setdefault(msg.subject or "", []).append(Envelope.FromString(msg.data or b""))
        return held
    finally:
        await client.close()


async def test_erasure_rewrites_the_event_store_and_purges_the_stream(
    identity: Identity, nats_server: NatsServer
) -> None:
    await identity.call(
        "CreateSite", pb.CreateSiteRequest(site_id="shop", display_name="Shop", site_group="g")
    )
    survivor = await register(
        identity, "tanaka@example.jp", given_name="Taro", phone="03-5555-0199"
    )
    await identity.call(
        "LinkIdentity",
        pb.LinkIdentityRequest(customer_id=survivor, provider="line", external_id="LINE-42"),
    )
    merged = await register(identity, "suzuki@example.jp", family_name="Suzuki")
    await identity.call(
        "MergeCustomers",
        pb.MergeCustomersRequest(survivor_id=survivor, merged_id=merged, reason="duplicate"),
    )
    await identity.call(
        "UpdateProfile",
        pb.UpdateProfileRequest(customer_id=survivor, profile=profile(given_name="Jiro")),
    )
    bystander = await register(identity, "sato@example.jp", given_name="Hanako")

    await identity.call(
        "EraseCustomer", pb.EraseCustomerRequest(customer_id=survivor, reason="art. 17")
    )

    export = await identity.call(
        "ExportCustomerData", pb.ExportCustomerDataRequest(customer_id=survivor)
    )
    assert export.customer.status == pb.CUSTOMER_STATUS_ERASED
    version = export.customer.version
    assert [change.version for change in export.history] == list(range(1, version + 1))
    stored = identity.service.app.recorder.select_notifications(1, 10_000)
    erased_rows = [n for n in stored if str(n.originator_id) in (survivor, merged)]
    assert not [w for n in erased_rows for w in PERSONAL if w.encode() in n.state]
    survivor_versions = [n.originator_version for n in stored if str(n.originator_id) == survivor]
    assert survivor_versions == list(range(1, version + 1)), "every event keeps its place"
    assert b"sato@example.jp" in next(n.state for n in stored if str(n.originator_id) == bystander)
    # The keys of the freed ids (derived from their values) no longer lead to anyone.
    freed = {
        str(login_key_id("tanaka@example.jp")),
        str(login_key_id("suzuki@example.jp")),
        str(external_key_id("line", "LINE-42")),
    }
    key_states = b"".join(n.state for n in stored if str(n.originator_id) in freed)
    assert key_states.count(b"owner_id") >= 3
    assert not [c for c in (survivor, merged) if UUID(c).hex.encode() in key_states]
    assert not [c for c in (survivor, merged) if c.encode() in key_states]

    # The stream keeps only each erased customer's erasure; the bystander is untouched.
    async def purged() -> bool:
        held = await stream_messages(nats_server.url)
        return (
            len(held.get(f"identity.customer.{merged}", [])) == 1
            and len(held.get(f"identity.customer.{survivor}", [])) == 1
        )

    await eventually(purged)
    held = await stream_messages(nats_server.url)
    for customer in (survivor, merged):
        (only,) = held[f"identity.customer.{customer}"]
        assert only.payload.Is(ev.CustomerErased.DESCRIPTOR)
    assert len(held[f"identity.customer.{bystander}"]) == 1
    everything = b"".join(e.SerializeToString() for events in held.values() for e in events)
    assert b"sato@example.jp" in everything
    assert not [w for w in PERSONAL if w.encode() in everything]
