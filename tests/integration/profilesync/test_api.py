"""ProfileSyncService over real gRPC: connectors, gating, replays, exports, errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest

from kizuna.consent.v1 import consent_pb2 as cpb
from kizuna.identity.v1 import identity_pb2 as ipb
from kizuna.identity.v1.identity_pb2_grpc import IdentityServiceStub
from kizuna.profilesync.v1 import profilesync_pb2 as pb
from kizuna_kit.natsd import NatsServer
from kizuna_kit.testing.waiting import eventually
from tests.conftest import Keys
from tests.integration.consent.service import Consent, publish, running_consent
from tests.integration.identity.conftest import identity_with_relay, register_at_shop
from tests.integration.profilesync.service import (
    SECRET,
    ProfileSync,
    Receiver,
    running_profilesync,
    running_receiver,
)

pytestmark = pytest.mark.integration
S = grpc.StatusCode


@dataclass
class Stack:
    identity: IdentityServiceStub
    consent: Consent
    sync: ProfileSync
    keys: Keys

    @property
    def auth(self) -> tuple[tuple[str, str], ...]:
        return Keys.auth(self.keys.admin)

    async def register(self, login: str, **fields: Any) -> str:
        return await register_at_shop(self.identity, self.keys, login, **fields)

    async def consent_to(
        self, customer: str, decision: cpb.Decision.ValueType, version: str = "1.0"
    ) -> None:
        await self.consent.call(
            "RecordConsent",
            cpb.RecordConsentRequest(
                subject_id=customer,
                statement_id="marketing-email",
                version=version,
                decision=decision,
            ),
        )


@pytest.fixture
async def stack(
    tmp_path: Path, keys: Keys, postgres_url: str, nats_server: NatsServer
) -> AsyncIterator[Stack]:
    async with (
        identity_with_relay(tmp_path / "identity", keys, nats_server.url) as ids,
        running_consent(tmp_path / "consent", keys, None, nats_server.url) as consent,
        running_profilesync(tmp_path / "sync", keys, postgres_url, nats_server.url) as sync,
    ):
        await publish(consent, "marketing-email", "1.0")
        # Projected before the test starts: it moves the position failed calls must not.
        await eventually(lambda: "marketing-email" in sync.service.store.catalogue(), within=30)
        yield Stack(ids, consent, sync, keys)


async def webhook(sync: ProfileSync, connector_id: str, port: int, *required: str) -> None:
    await sync.call(
        "CreateConnector",
        pb.CreateConnectorRequest(
            connector_id=connector_id,
            kind=pb.CONNECTOR_KIND_WEBHOOK,
            webhook=pb.WebhookConfig(url=f"http://127.0.0.1:{port}/hook", secret=SECRET),
            required_statements=list(required),
            fields=["given_name", "family_name", "phone"],
        ),
    )


async def test_consent_gates_deliveries(stack: Stack, postgres_url: str) -> None:
    receiver = Receiver()
    async with running_receiver(receiver):
        await webhook(stack.sync, "marketing", receiver.port, "marketing-email")
        tanaka = await stack.register("tanaka@example.jp", given_name="Taro", family_name="Tanaka")

        async def projected() -> bool:
            reply = await stack.sync.call("GetProfile", pb.GetProfileRequest(customer_id=tanaka))
            return bool(reply.profile.given_name == "Taro")

        await eventually(projected, within=30)

        async def marketing() -> pb.GetConnectorStatusResponse:
            request = pb.GetConnectorStatusRequest(connector_id="marketing")
            reply: pb.GetConnectorStatusResponse = await stack.sync.call(
                "GetConnectorStatus", request
            )
            return reply

        async def caught_up() -> bool:
            return (await marketing()).lag == 0

        # Gating happens when the event is projected: once the connector has caught up,
        # anything it would send is already in its outbox.
        await eventually(caught_up, within=30)
        status = await marketing()
        assert (status.pending, status.delivered) == (0, 0), "no consent yet: nothing queued"
        assert receiver.applied == []

        await stack.consent_to(tanaka, cpb.DECISION_GRANTED)
        await eventually(lambda: tanaka in receiver.state, within=30)
        assert receiver.state[tanaka]["given_name"] == "Taro"

        await stack.consent_to(tanaka, cpb.DECISION_WITHDRAWN)
        await eventually(lambda: tanaka not in receiver.state, within=30)
        assert receiver.applied[-1]["type"] == "customer.deleted"
        assert receiver.applied[-1]["data"] == {"reason": "consent"}

        await stack.consent_to(tanaka, cpb.DECISION_GRANTED)
        await eventually(lambda: tanaka in receiver.state, within=30)
        await stack.identity.EraseCustomer(
            ipb.EraseCustomerRequest(customer_id=tanaka), metadata=stack.auth
        )
        await eventually(lambda: tanaka not in receiver.state, within=30)
        assert receiver.applied[-1]["data"] == {"reason": "erased"}

        async def gone() -> bool:
            try:
                await stack.sync.call("GetProfile", pb.GetProfileRequest(customer_id=tanaka))
            except grpc.aio.AioRpcError as error:
                return bool(error.code() == S.NOT_FOUND)
            return False

        await eventually(gone, within=30)
        assert receiver.bad_signatures == 0
        assert receiver.out_of_order == 0

    # Nothing of the erased customer stays at rest here: not in the inbox (the events
    # are kept, without their data), not in a delivery body.
    held = [e for _, _, e in stack.sync.service.store.inbox() if e.aggregate_id == tanaka]
    assert len(held) >= 2
    assert not [e for e in held if b"Taro" in e.SerializeToString()]
    with psycopg.connect(postgres_url) as db:
        bodies = db.execute(
            "SELECT body FROM deliveries WHERE customer_id = %s", [tanaka]
        ).fetchall()
    assert bodies
    assert not [body for (body,) in bodies if b"Taro" in bytes(body)]


async def test_a_new_major_takes_the_customer_away_until_they_consent_again(
    stack: Stack,
) -> None:
    receiver, crm = Receiver(), Receiver()
    async with running_receiver(receiver), running_receiver(crm):
        await webhook(stack.sync, "marketing", receiver.port, "marketing-email")
        await webhook(stack.sync, "crm", crm.port)
        tanaka = await stack.register("tanaka@example.jp", given_name="Taro", family_name="Tanaka")
        await stack.consent_to(tanaka, cpb.DECISION_GRANTED)
        # (crm's fields do not include consents: the grant changes nothing it gets)
        await eventually(lambda: tanaka in receiver.state and len(crm.applied) == 1, within=30)

        async def mail_consent() -> pb.ConsentState:
            reply = await stack.sync.call("GetProfile", pb.GetProfileRequest(customer_id=tanaka))
            [state] = reply.profile.consents
            assert isinstance(state, pb.ConsentState)
            return state

        assert (await mail_consent()).status == pb.CONSENT_STATUS_GRANTED
        await publish(stack.consent, "marketing-email", "1.1")  # a MINOR: still current
        await publish(stack.consent, "marketing-email", "2.0")
        await eventually(lambda: tanaka not in receiver.state, within=30)
        assert receiver.applied[-1]["type"] == "customer.deleted"
        assert receiver.applied[-1]["data"] == {"reason": "consent"}
        state = await mail_consent()
        assert (state.status, state.version) == (pb.CONSENT_STATUS_OUTDATED, "1.0")
        assert len(receiver.applied) == 2
        assert len(crm.applied) == 1, "crm, requiring nothing, was told nothing"

        await stack.consent_to(tanaka, cpb.DECISION_GRANTED, version="2.0")
        await eventually(lambda: tanaka in receiver.state, within=30)
        state = await mail_consent()
        assert (state.status, state.version) == (pb.CONSENT_STATUS_GRANTED, "2.0")
        assert receiver.out_of_order == 0


async def test_flaky_receiver_gets_every_customer_once_in_order(stack: Stack) -> None:
    receiver = Receiver(failure_rate=0.3, stall_rate=0.03, stall_seconds=0.7)
    async with running_receiver(receiver):
        await webhook(stack.sync, "crm", receiver.port)
        customers = 1000

        async def client(n: int) -> list[str]:
            made = []
            for i in range(n, customers, 8):
                customer = await stack.register(
                    f"c{i}@example.jp", given_name=f"G{i}", family_name="F"
                )
                made.append(customer)
                if i % 2 == 0:
                    await stack.identity.UpdateProfile(
                        ipb.UpdateProfileRequest(
                            customer_id=customer, profile=ipb.Profile(phone=f"+81 3 {i:04d} 0000")
                        ),
                        metadata=stack.auth,
                    )
                if i % 3 == 0:
                    await stack.consent_to(customer, cpb.DECISION_GRANTED)
                if i % 10 == 0:
                    await stack.identity.UpdateProfile(
                        ipb.UpdateProfileRequest(
                            customer_id=customer, profile=ipb.Profile(given_name=f"H{i}")
                        ),
                        metadata=stack.auth,
                    )
            return made

        made = [c for chunk in await asyncio.gather(*(client(n) for n in range(8))) for c in chunk]

        async def settled() -> bool:
            status = await stack.sync.call(
                "GetConnectorStatus", pb.GetConnectorStatusRequest(connector_id="crm")
            )
            return bool(
                len(receiver.state) == customers and status.pending == 0 and status.lag == 0
            )

        await eventually(settled, within=240)
        for customer in made:
            profile = (
                await stack.sync.call("GetProfile", pb.GetProfileRequest(customer_id=customer))
            ).profile
            assert receiver.state[customer] == {
                "given_name": profile.given_name,
                "family_name": profile.family_name,
                "phone": profile.phone,
            }
        status = await stack.sync.call(
            "GetConnectorStatus", pb.GetConnectorStatusRequest(connector_id="crm")
        )
        assert status.dead_lettered == 0
        assert receiver.out_of_order == 0
        assert receiver.bad_signatures == 0
        assert receiver.attempts > len(receiver.seen), "the receiver did fail some requests"
        # Stalled requests were answered late after a retry had been sent: duplicates arrive and are
        # recognised by webhook-id; none was applied twice.
        assert len(receiver.applied) == len(receiver.seen)


async def test_file_export_and_replay_give_the_same_bytes(stack: Stack, tmp_path: Path) -> None:
    directory = tmp_path / "exports"
    await stack.sync.call(
        "CreateConnector",
        pb.CreateConnectorRequest(
            connector_id="warehouse",
            kind=pb.CONNECTOR_KIND_FILE_EXPORT,
            file_export=pb.FileExportConfig(directory=str(directory), format=pb.EXPORT_FORMAT_CSV),
            fields=["given_name", "family_name", "consents"],
        ),
    )
    made = [
        await stack.register(f"w{i}@example.jp", given_name=f"G{i}", family_name="F")
        for i in range(30)
    ]
    for customer in made[:10]:
        await stack.consent_to(customer, cpb.DECISION_GRANTED)

    store = stack.sync.service.store

    def all_in() -> bool:
        # The statement's publication, 30 registrations and 10 consents, one event each:
        # the file is named after the inbox position, so every event must be in before
        # the first export.
        return (
            store.last_seq() == 41
            and len(list(store.holdings("warehouse"))) == 30
            and store.counts("warehouse").pending == 0
        )

    await eventually(all_in, within=30)
    first = await stack.sync.call("RunExport", pb.RunExportRequest(connector_id="warehouse"))
    assert first.rows == 30
    before = Path(first.path).read_bytes()
    assert before.startswith(b"customer_id,given_name,family_name,consents\r\n")
    Path(first.path).unlink()
    replay = await stack.sync.call(
        "ReplayConnector", pb.ReplayConnectorRequest(connector_id="warehouse")
    )
    assert replay.queued >= 30
    second = await stack.sync.call("RunExport", pb.RunExportRequest(connector_id="warehouse"))
    assert second.path == first.path
    assert Path(second.path).read_bytes() == before
    assert not [p for p in directory.iterdir() if p.name.endswith(".tmp")]

    # The settings changed since: the next export follows them, with the profiles as
    # they are (no delivery told the connector about the consents it now requires).
    Path(second.path).unlink()
    await stack.sync.call(
        "UpdateConnector",
        pb.UpdateConnectorRequest(
            connector_id="warehouse",
            file_export=pb.FileExportConfig(directory=str(directory), format=pb.EXPORT_FORMAT_CSV),
            required_statements=["marketing-email"],
            fields=["given_name"],
        ),
    )
    third = await stack.sync.call("RunExport", pb.RunExportRequest(connector_id="warehouse"))
    assert third.rows == 10
    exported = Path(third.path).read_text().splitlines()
    assert exported[0] == "customer_id,given_name"
    assert sorted(line.split(",")[0] for line in exported[1:]) == sorted(made[:10])


async def test_connector_error_rows(stack: Stack) -> None:
    sync = stack.sync
    await sync.fails(
        "GetConnectorStatus",
        pb.GetConnectorStatusRequest(connector_id="nope"),
        S.NOT_FOUND,
        "CONNECTOR_NOT_FOUND",
    )
    await sync.fails(
        "RunExport", pb.RunExportRequest(connector_id="nope"), S.NOT_FOUND, "CONNECTOR_NOT_FOUND"
    )
    for url in ("ftp://example.com/hook", "file:///etc/passwd", "not a url"):
        await sync.fails(
            "CreateConnector",
            pb.CreateConnectorRequest(
                connector_id="bad",
                kind=pb.CONNECTOR_KIND_WEBHOOK,
                webhook=pb.WebhookConfig(url=url, secret=SECRET),
            ),
            S.INVALID_ARGUMENT,
            "INVALID_CONNECTOR",
        )
    await sync.fails(
        "CreateConnector",
        pb.CreateConnectorRequest(
            connector_id="bad",
            kind=pb.CONNECTOR_KIND_WEBHOOK,
            webhook=pb.WebhookConfig(url="https://example.com/hook", secret="short"),
        ),
        S.INVALID_ARGUMENT,
        "INVALID_CONNECTOR",
    )
    await sync.fails(
        "CreateConnector",
        pb.CreateConnectorRequest(
            connector_id="bad",
            kind=pb.CONNECTOR_KIND_WEBHOOK,
            webhook=pb.WebhookConfig(url="https://example.com/hook", secret=SECRET),
        ),
        S.PERMISSION_DENIED,
        "PERMISSION_DENIED",
        token=sync.keys.auditor,
    )
    await webhook(sync, "crm", 9)
    await sync.fails(
        "CreateConnector",
        pb.CreateConnectorRequest(
            connector_id="crm",
            kind=pb.CONNECTOR_KIND_WEBHOOK,
            webhook=pb.WebhookConfig(url="https://example.com/hook", secret=SECRET),
        ),
        S.ALREADY_EXISTS,
        "CONNECTOR_EXISTS",
    )
    listed = await sync.call("ListConnectors", pb.ListConnectorsRequest())
    assert [c.connector_id for c in listed.connectors] == ["crm"]
    assert SECRET not in str(listed)
    await sync.fails(
        "RunExport",
        pb.RunExportRequest(connector_id="crm"),
        S.FAILED_PRECONDITION,
        "NOT_AN_EXPORT_CONNECTOR",
    )
