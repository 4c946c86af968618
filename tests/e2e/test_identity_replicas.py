"""Two identity processes on one PostgreSQL database: both serve, and stream IDENTITY
holds every event once, in notification order."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import nats
import pytest

from kizuna.events.v1.envelope_pb2 import Envelope
from kizuna.identity.v1 import identity_pb2 as pb
from kizuna.identity.v1.identity_pb2_grpc import IdentityServiceStub
from kizuna_kit.natsd import NatsServer
from kizuna_kit.ports import free_port
from kizuna_kit.testing.waiting import eventually
from tests.conftest import Keys
from tests.e2e.processes import all_serving

pytestmark = pytest.mark.e2e


@pytest.fixture
def replicas(
    tmp_path: Path, keys: Keys, postgres_url: str, nats_server: NatsServer
) -> Iterator[list[str]]:
    processes, addresses = [], []
    for i in range(2):
        port = free_port()
        env = {
            **os.environ,
            "KIZUNA_IDENTITY_PORT": str(port),
            "KIZUNA_IDENTITY_METRICS_PORT": str(free_port()),
            "KIZUNA_IDENTITY_DATABASE_URL": postgres_url,
            "KIZUNA_NATS_URL": nats_server.url,
            "KIZUNA_API_KEYS_FILE": str(keys.path),
            "KIZUNA_IDENTITY_ARGON2_MEMORY_KIB": "64",
            "KIZUNA_IDENTITY_ARGON2_TIME_COST": "1",
            "KIZUNA_LOG_FORMAT": "json",
        }
        log = (tmp_path / f"identity-{i}.log").open("wb")
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "kizuna_identity"], env=env, stdout=log, stderr=log
            )
        )
        addresses.append(f"127.0.0.1:{port}")
    yield addresses
    for process in processes:
        process.terminate()
        process.wait(timeout=30)


async def with_shop(
    replicas: list[str], keys: Keys, tmp_path: Path
) -> tuple[list[grpc.aio.Channel], list[IdentityServiceStub]]:
    """Once both replicas serve: a channel and a stub for each, and the site "shop"."""
    await all_serving(replicas, tmp_path)
    channels = [grpc.aio.insecure_channel(a) for a in replicas]
    stubs = [IdentityServiceStub(c) for c in channels]
    await stubs[0].CreateSite(
        pb.CreateSiteRequest(site_id="shop", display_name="Shop", site_group="g"),
        metadata=Keys.auth(keys.admin),
    )
    return channels, stubs


async def test_two_replicas_one_exact_stream(
    replicas: list[str], keys: Keys, nats_server: NatsServer, tmp_path: Path
) -> None:
    channels, stubs = await with_shop(replicas, keys, tmp_path)
    auth = Keys.auth(keys.admin)

    async def client(n: int) -> None:
        for i in range(50):
            await stubs[n % 2].RegisterCustomer(
                pb.RegisterCustomerRequest(
                    site_id="shop",
                    login_id=f"r{n}-{i}@example.jp",
                    password="correct horse battery",
                ),
                metadata=auth,
            )

    await asyncio.gather(*(client(n) for n in range(4)))
    expected = 1 + 4 * 50  # the site and every registration
    client_nats = await nats.connect(nats_server.url)
    js = client_nats.jetstream()

    async def complete() -> bool:
        return bool((await js.stream_info("IDENTITY")).state.messages >= expected)

    await eventually(complete, within=60)
    await asyncio.sleep(1)  # a second relay, if one misbehaved, would add more now
    info = await js.stream_info("IDENTITY")
    positions = [
        Envelope.FromString((await js.get_msg("IDENTITY", seq=s)).data or b"").position
        for s in range(1, info.state.last_seq + 1)
    ]
    await client_nats.close()
    for channel in channels:
        await channel.close()
    assert len(positions) == expected
    assert positions == sorted(set(positions))


async def test_failed_logins_count_across_replicas(
    replicas: list[str], keys: Keys, tmp_path: Path
) -> None:
    channels, stubs = await with_shop(replicas, keys, tmp_path)
    auth = Keys.auth(keys.admin)
    password = "correct horse battery"
    await stubs[0].RegisterCustomer(
        pb.RegisterCustomerRequest(site_id="shop", login_id="t@example.jp", password=password),
        metadata=auth,
    )

    async def login(replica: int, attempt: str) -> grpc.StatusCode:
        request = pb.LoginRequest(site_id="shop", login_id="t@example.jp", password=attempt)
        try:
            await stubs[replica].Login(request, metadata=auth)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK

    # Five failures, spread over both replicas, lock the login on both.
    failures = [await login(i % 2, "wrong horse battery") for i in range(5)]
    locked = [await login(i, password) for i in (0, 1)]
    for channel in channels:
        await channel.close()
    assert failures == [grpc.StatusCode.UNAUTHENTICATED] * 5
    assert locked == [grpc.StatusCode.RESOURCE_EXHAUSTED] * 2
