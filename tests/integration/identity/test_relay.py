"""Stream IDENTITY holds every identity event exactly once, in notification order,
through relay crashes and nats-server crashes (real PostgreSQL + real nats-server)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import nats
import pytest

from kizuna.events.v1.envelope_pb2 import Envelope
from kizuna.identity.v1 import identity_pb2 as pb
from kizuna.identity.v1.identity_pb2_grpc import IdentityServiceStub
from kizuna_identity.main import IdentityService
from kizuna_identity.wire import STREAM, SUBJECTS, translator
from kizuna_kit.cancellation import cancel_and_wait
from kizuna_kit.natsd import NatsServer
from kizuna_kit.relay import Relay
from kizuna_kit.testing.waiting import eventually
from tests.conftest import Keys
from tests.integration.identity.conftest import start_identity

pytestmark = pytest.mark.integration

CLIENTS = 8
PER_CLIENT = 125


def expected_positions(service: IdentityService) -> list[int]:
    translate = translator(service.app.mapper)
    positions: list[int] = []
    start = 1
    while True:
        page = service.app.recorder.select_notifications(start, 1000)
        positions += [n.id for n in page if translate(n) is not None]
        if len(page) < 1000:
            return positions
        start = page[-1].id + 1


async def stream_positions(nats_url: str) -> list[int]:
    client = await nats.connect(nats_url)
    try:
        js = client.jetstream()
        info = await js.stream_info(STREAM)
        positions = []
        for seq in range(1, info.state.last_seq + 1):
            msg = await js.get_msg(STREAM, seq=seq)
            envelope = Envelope.FromString(msg.data or b"")
            assert (msg.headers or {})["Nats-Msg-Id"] == envelope.event_id
            positions.append(envelope.position)
        return positions
    finally:
        await client.close()


async def register_many(stub: IdentityServiceStub, keys: Keys, progress: list[int]) -> None:
    async def client(n: int) -> None:
        for i in range(PER_CLIENT):
            await stub.RegisterCustomer(
                pb.RegisterCustomerRequest(
                    site_id="shop",
                    login_id=f"c{n}-{i}@example.jp",
                    password="correct horse battery",
                    channel="ec",
                ),
                metadata=Keys.auth(keys.admin),
                timeout=30,
            )
            progress[0] += 1

    await asyncio.gather(*(client(n) for n in range(CLIENTS)))


@pytest.fixture
async def running(
    tmp_path: Path, keys: Keys, postgres_url: str, nats_server: NatsServer
) -> AsyncIterator[tuple[IdentityService, IdentityServiceStub]]:
    service, _ = await start_identity(tmp_path, keys, postgres_url, nats_server.url, relay=False)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{service.server.port}")
    stub = IdentityServiceStub(channel)
    await stub.CreateSite(
        pb.CreateSiteRequest(site_id="shop", display_name="Shop", site_group="g"),
        metadata=Keys.auth(keys.admin),
    )
    yield service, stub
    await channel.close()
    await service.server.stop(0)
    await service.close()


def new_relay(service: IdentityService) -> Relay:
    return Relay(
        service="identity",
        stream=STREAM,
        subjects=SUBJECTS,
        log_reader=service.app.recorder,
        translate=translator(service.app.mapper),
        link=service.link,
        batch_size=50,  # small batches, so a crash lands mid-stream
    )


async def all_published(service: IdentityService, nats_url: str) -> None:
    want = expected_positions(service)

    async def done() -> bool:
        return (await stream_positions(nats_url))[-1:] == want[-1:]

    await eventually(done)
    assert await stream_positions(nats_url) == want
    assert len(want) == CLIENTS * PER_CLIENT + 1  # every registration plus the site


async def test_relay_crash_loses_and_duplicates_nothing(
    running: tuple[IdentityService, IdentityServiceStub], keys: Keys, nats_server: NatsServer
) -> None:
    service, stub = running
    progress = [0]
    relay_task = asyncio.create_task(new_relay(service).run())
    writers = asyncio.create_task(register_many(stub, keys, progress))
    for crash_at in (200, 500, 800):
        await eventually(lambda at=crash_at: progress[0] >= at)  # type: ignore[misc]
        await cancel_and_wait([relay_task])  # a crash at an arbitrary point, possibly mid-batch
        relay_task = asyncio.create_task(new_relay(service).run())
    await writers
    await all_published(service, nats_server.url)
    relay_task.cancel()


async def test_nats_crash_loses_and_duplicates_nothing(
    running: tuple[IdentityService, IdentityServiceStub], keys: Keys, nats_server: NatsServer
) -> None:
    service, stub = running
    progress = [0]
    relay_task = asyncio.create_task(new_relay(service).run())
    writers = asyncio.create_task(register_many(stub, keys, progress))
    await eventually(lambda: progress[0] >= 300)
    nats_server.kill()
    # Writes go on while NATS is down: the event store is the outbox.
    await eventually(lambda: progress[0] >= 600)
    nats_server.start()
    await writers
    await all_published(service, nats_server.url)
    relay_task.cancel()


async def test_two_relays_at_once_publish_each_event_once_in_order(
    running: tuple[IdentityService, IdentityServiceStub], keys: Keys, nats_server: NatsServer
) -> None:
    """No lease: two relays race on one log; the stream's expectations keep it exact."""
    service, stub = running
    progress = [0]
    relays = [asyncio.create_task(new_relay(service).run()) for _ in range(2)]
    await register_many(stub, keys, progress)
    await all_published(service, nats_server.url)
    await cancel_and_wait(relays)


async def test_the_relay_publishes_while_the_shared_thread_pool_is_busy(
    running: tuple[IdentityService, IdentityServiceStub], nats_server: NatsServer
) -> None:
    """Under load, requests fill the shared pool; the relay must not queue behind them."""
    service, _ = running
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(1))
    started, hold = threading.Event(), threading.Event()

    def occupy() -> None:
        started.set()
        hold.wait(60)

    busy = loop.run_in_executor(None, occupy)
    assert started.wait(5)
    relay_task = asyncio.create_task(new_relay(service).run())
    try:
        want = expected_positions(service)  # the site, created by the fixture
        assert want

        async def published() -> bool:
            return await stream_positions(nats_server.url) == want

        await eventually(published, within=10)
    finally:
        hold.set()
        await busy
        await cancel_and_wait([relay_task])
