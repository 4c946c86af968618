"""Delivery failures: dead letters and their retry, and 410 pausing the connector."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest

from kizuna.identity.v1 import events_pb2 as ev
from kizuna.identity.v1 import identity_pb2 as ipb
from kizuna.profilesync.v1 import profilesync_pb2 as pb
from kizuna_kit.testing.waiting import eventually
from kizuna_kit.wire import OutgoingEvent, envelope
from tests.conftest import Keys
from tests.integration.profilesync.service import (
    SECRET,
    ProfileSync,
    Receiver,
    running_profilesync,
    running_receiver,
)
from tests.unit.profilesync.builders import published

pytestmark = pytest.mark.integration


@pytest.fixture
async def sync(tmp_path: Path, keys: Keys, database_url: str | None) -> AsyncIterator[ProfileSync]:
    settings = {"KIZUNA_PROFILESYNC_MAX_ATTEMPTS": "3"}
    async with running_profilesync(
        tmp_path / "sync", keys, database_url, None, settings
    ) as running:
        yield running


async def registered(sync: ProfileSync, position: int, name: str) -> None:
    customer = f"00000000-0000-4000-8000-{position:012d}"
    now = datetime.now(UTC)
    payload = ev.CustomerRegistered(
        customer_id=customer,
        site_id="shop",
        login_id=f"{name}@example.jp",
        profile=ipb.Profile(given_name=name),
    )
    event = envelope(
        "identity",
        "IDENTITY",
        position,
        OutgoingEvent(f"identity.customer.{customer}", customer, 1, now, now, payload),
    )
    await asyncio.to_thread(sync.service.app.project, "IDENTITY", event)


async def webhook(sync: ProfileSync, port: int) -> None:
    await sync.call(
        "CreateConnector",
        pb.CreateConnectorRequest(
            connector_id="crm",
            kind=pb.CONNECTOR_KIND_WEBHOOK,
            fields=["given_name"],
            webhook=pb.WebhookConfig(url=f"http://127.0.0.1:{port}/", secret=SECRET),
        ),
    )


async def status(sync: ProfileSync) -> pb.GetConnectorStatusResponse:
    reply: pb.GetConnectorStatusResponse = await sync.call(
        "GetConnectorStatus", pb.GetConnectorStatusRequest(connector_id="crm")
    )
    return reply


async def test_dead_letters_and_their_retry(sync: ProfileSync) -> None:
    receiver = Receiver(status_override=500)
    async with running_receiver(receiver):
        await webhook(sync, receiver.port)
        await registered(sync, 1, "taro")
        await registered(sync, 2, "hanako")

        async def dead() -> bool:
            return (await status(sync)).dead_lettered == 2

        await eventually(dead, within=30)
        assert receiver.attempts == 6  # three tries each
        letters = await sync.call("ListDeadLetters", pb.ListDeadLettersRequest(connector_id="crm"))
        assert [d.attempts for d in letters.dead_letters] == [3, 3]
        assert "503" not in letters.dead_letters[0].last_error  # the receiver said 500
        assert "500" in letters.dead_letters[0].last_error

        receiver.status_override = None
        retried = await sync.call(
            "RetryDeadLetters", pb.RetryDeadLettersRequest(connector_id="crm")
        )
        assert retried.requeued == 2
        await eventually(lambda: len(receiver.state) == 2, within=30)
        final = await status(sync)
        assert (final.dead_lettered, final.pending, final.delivered) == (0, 0, 2)


async def test_gone_pauses_the_connector_and_keeps_the_delivery(sync: ProfileSync) -> None:
    receiver = Receiver(status_override=410)
    async with running_receiver(receiver):
        await webhook(sync, receiver.port)
        await registered(sync, 1, "taro")

        async def paused() -> bool:
            return (await status(sync)).paused

        await eventually(paused, within=30)
        assert (await status(sync)).pending == 1
        attempts = receiver.attempts
        await asyncio.sleep(0.5)
        assert receiver.attempts == attempts, "a paused connector gets nothing"

        receiver.status_override = None
        await sync.call("ResumeConnector", pb.ResumeConnectorRequest(connector_id="crm"))
        await eventually(lambda: len(receiver.state) == 1, within=30)


async def test_secrets_never_leave(sync: ProfileSync) -> None:
    await webhook(sync, 9)
    listed = await sync.call("ListConnectors", pb.ListConnectorsRequest())
    assert SECRET not in str(listed)
    stored = [n.state for n in sync.service.app.connectors.recorder.select_notifications(1, 100)]
    assert all(SECRET.encode() not in state for state in stored)
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await sync.call(
            "CreateConnector",
            pb.CreateConnectorRequest(
                connector_id="x",
                kind=pb.CONNECTOR_KIND_WEBHOOK,
                webhook=pb.WebhookConfig(url="https://example.com", secret=SECRET),
            ),
            sync.keys.auditor,
        )
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_connector_status_command(sync: ProfileSync) -> None:
    receiver = Receiver()
    async with running_receiver(receiver):
        await webhook(sync, receiver.port)
        await registered(sync, 1, "taro")
        await eventually(lambda: len(receiver.state) == 1, within=30)
        env = {
            **os.environ,
            "KIZUNA_PROFILESYNC_ADDR": f"127.0.0.1:{sync.service.server.port}",
            "KIZUNA_TOKEN": sync.keys.admin,
        }
        kizuna = str(Path(sys.executable).parent / "kizuna")
        shown = await asyncio.to_thread(
            subprocess.run,
            [kizuna, "connector", "status", "crm"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert shown.returncode == 0, shown.stderr
        assert "connector crm: running" in shown.stdout
        assert "delivered      1" in shown.stdout
        missing = await asyncio.to_thread(
            subprocess.run,
            [kizuna, "connector", "status", "nope"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert missing.returncode == 1
        assert "NOT_FOUND [CONNECTOR_NOT_FOUND]" in missing.stderr
        assert missing.stderr.count("\n") == 1  # one clear line


async def test_rebuild_from_position_zero_equals_the_live_projection(sync: ProfileSync) -> None:
    store = sync.service.store
    for position in range(1, 41):
        await registered(sync, position, f"name{position}")
    # A consent record for one of them, and a merge, so the fold has real work to do.
    now = datetime.now(UTC)
    first, second = (f"00000000-0000-4000-8000-{n:012d}" for n in (1, 2))
    merged = ev.CustomerMerged(customer_id=second, survivor_id=first)
    event = envelope(
        "identity",
        "IDENTITY",
        41,
        OutgoingEvent(f"identity.customer.{second}", second, 2, now, now, merged),
    )
    await asyncio.to_thread(sync.service.app.project, "IDENTITY", event)
    for position, version in enumerate(("1.0", "2.0", "1.1"), start=1):  # 1.1 published late
        publication = published("marketing-email", version, position=position)
        await asyncio.to_thread(sync.service.app.project, "CONSENT", publication)
    ids = [f"00000000-0000-4000-8000-{n:012d}" for n in range(1, 41)]
    live = {i: store.get_profile(i) for i in ids}
    assert store.catalogue() == {"marketing-email": 2}
    merged_profile = live[second]
    assert merged_profile is not None
    assert merged_profile.merged_into == first
    folded = await asyncio.to_thread(sync.service.app.rebuild)
    assert folded == 44
    assert {i: store.get_profile(i) for i in ids} == live
    assert store.catalogue() == {"marketing-email": 2}
