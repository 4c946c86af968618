"""A consent service running in the test's event loop, on SQLite or PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc

from kizuna.consent.v1 import consent_pb2 as pb
from kizuna.consent.v1.consent_pb2_grpc import ConsentServiceStub
from kizuna_consent.main import ConsentService, build
from kizuna_consent.signing import write_new_signing_key
from kizuna_kit.cancellation import cancel_and_wait
from kizuna_kit.config import ServiceConfig
from tests.conftest import Keys
from tests.support import Caller


class Consent(Caller):
    service: ConsentService

    def __init__(self, service: ConsentService, stub: ConsentServiceStub, keys: Keys) -> None:
        store = service.store
        super().__init__(stub, keys, lambda: (store.max_notification_id(), store.tree().size))
        self.service = service


@asynccontextmanager
async def running_consent(
    data_dir: Path, keys: Keys, database_url: str | None, nats_url: str | None
) -> AsyncIterator[Consent]:
    """With `nats_url`, the relay and the IDENTITY consumer run too."""
    data_dir.mkdir(parents=True, exist_ok=True)
    key_file = data_dir / "signing.pem"
    if not key_file.exists():
        write_new_signing_key(key_file)
    config = ServiceConfig(
        service="consent",
        host="127.0.0.1",
        port=0,
        metrics_port=0,
        nats_url=nats_url or "nats://127.0.0.1:1",
        database_url=database_url,
        data_dir=data_dir,
        api_keys_file=keys.path,
        log_level="warning",
        log_format="json",
        shutdown_grace_seconds=0.5,
        workers=8,
    )
    service = build(config, {"KIZUNA_CONSENT_SIGNING_KEY_FILE": str(key_file)})
    await service.server.start()
    tasks = (
        [asyncio.create_task(service.relay.run()), asyncio.create_task(service.consumer.run())]
        if nats_url
        else []
    )
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{service.server.port}")
    try:
        yield Consent(service, ConsentServiceStub(channel), keys)
    finally:
        await cancel_and_wait(tasks)
        await channel.close()
        await service.server.stop(0)
        await service.close()


async def publish(consent: Consent, statement: str, version: str) -> None:
    await consent.call(
        "PublishStatement",
        pb.PublishStatementRequest(
            statement_id=statement,
            version=version,
            purpose="p",
            title=f"{statement} {version}",
            text=f"The text of {statement} {version}.",
        ),
    )
