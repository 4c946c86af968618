"""An identity service running in the test's event loop on a free port, on SQLite or PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from kizuna.identity.v1 import identity_pb2 as pb
from kizuna.identity.v1.identity_pb2_grpc import IdentityServiceStub
from kizuna_identity.main import IdentityService, build
from kizuna_kit.cancellation import cancel_and_wait
from kizuna_kit.config import ServiceConfig
from tests.conftest import Keys
from tests.support import Caller

PASSWORD = "correct horse battery"
CHEAP_HASH = {
    "KIZUNA_TESTING": "1",
    "KIZUNA_IDENTITY_ARGON2_MEMORY_KIB": "64",
    "KIZUNA_IDENTITY_ARGON2_TIME_COST": "1",
}


def identity_config(
    data_dir: Path, keys_path: Path, database_url: str | None, nats_url: str
) -> ServiceConfig:
    return ServiceConfig(
        service="identity",
        host="127.0.0.1",
        port=0,
        metrics_port=0,
        nats_url=nats_url,
        database_url=database_url,
        data_dir=data_dir,
        api_keys_file=keys_path,
        log_level="warning",
        log_format="json",
        shutdown_grace_seconds=0.5,
        workers=8,
    )


class Identity(Caller):
    service: IdentityService

    def __init__(self, service: IdentityService, stub: IdentityServiceStub, keys: Keys) -> None:
        super().__init__(stub, keys, lambda: service.app.recorder.max_notification_id() or 0)
        self.service = service


async def start_identity(
    tmp_path: Path, keys: Keys, database_url: str | None, nats_url: str, relay: bool
) -> tuple[IdentityService, asyncio.Task[None] | None]:
    service = build(identity_config(tmp_path, keys.path, database_url, nats_url), CHEAP_HASH)
    await service.server.start()
    task = asyncio.create_task(service.relay.run()) if relay else None
    return service, task


@asynccontextmanager
async def identity_with_relay(
    data_dir: Path, keys: Keys, nats_url: str
) -> AsyncIterator[IdentityServiceStub]:
    """Identity on SQLite in `data_dir`, its relay publishing to `nats_url`, with a site
    "shop" (group "g"); a stub."""
    service, relay = await start_identity(data_dir, keys, None, nats_url, True)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{service.server.port}")
    try:
        stub = IdentityServiceStub(channel)
        await stub.CreateSite(
            pb.CreateSiteRequest(site_id="shop", display_name="Shop", site_group="g"),
            metadata=Keys.auth(keys.admin),
        )
        yield stub
    finally:
        if relay is not None:
            await cancel_and_wait([relay])
        await channel.close()
        await service.server.stop(0)
        await service.close()


async def register_at_shop(stub: IdentityServiceStub, keys: Keys, login: str, **fields: Any) -> str:
    """A customer registered at `identity_with_relay`'s site; their id."""
    reply = await stub.RegisterCustomer(
        pb.RegisterCustomerRequest(
            site_id="shop", login_id=login, password=PASSWORD, profile=pb.Profile(**fields)
        ),
        metadata=Keys.auth(keys.admin),
    )
    return str(reply.customer_id)


@pytest.fixture
async def identity(
    tmp_path: Path, keys: Keys, database_url: str | None, request: pytest.FixtureRequest
) -> AsyncIterator[Identity]:
    nats_url = "nats://127.0.0.1:1"
    uses_nats = "nats_server" in request.fixturenames
    if uses_nats:
        nats_url = request.getfixturevalue("nats_server").url
    service, relay_task = await start_identity(tmp_path, keys, database_url, nats_url, uses_nats)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{service.server.port}")
    yield Identity(service, IdentityServiceStub(channel), keys)
    if relay_task is not None:
        relay_task.cancel()
    await channel.close()
    await service.server.stop(0)
    await service.close()


def profile(**fields: Any) -> pb.Profile:
    return pb.Profile(**fields)


ADDRESS = pb.PostalAddress(
    postal_code="100-0001",
    region="Tokyo",
    locality="Chiyoda-ku",
    street="1-1 Chiyoda",
    country="JP",
)
