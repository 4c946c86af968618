"""Composition root of the profile-sync service."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kizuna.profilesync.v1 import profilesync_pb2_grpc as pb_grpc
from kizuna_kit.auth import ApiKeys
from kizuna_kit.config import ConfigError, ServiceConfig, env_float, env_int
from kizuna_kit.consumer import Consumer
from kizuna_kit.eventstore import eventsourcing_env, open_application
from kizuna_kit.lease import leased
from kizuna_kit.logging import get_logger
from kizuna_kit.nats_link import NatsLink
from kizuna_kit.server import GrpcServer, ServiceBinding
from kizuna_kit.service import run_service
from kizuna_kit.threads import OwnThreads
from kizuna_profilesync.api import POLICY, SERVICE_NAME, ProfileSyncServicer
from kizuna_profilesync.application import ProfileSyncApplication
from kizuna_profilesync.connectors import ConnectorsApplication
from kizuna_profilesync.delivery import Deliverer
from kizuna_profilesync.domain.connector import ConnectorKind
from kizuna_profilesync.domain.retry import RetryPolicy
from kizuna_profilesync.secret_box import SecretBox
from kizuna_profilesync.storage.factory import open_store
from kizuna_profilesync.storage.interface import SyncStore
from kizuna_profilesync.streams import DURABLE, STREAMS, stream_batch_handler, stream_handler

SERVICE = "profilesync"
log = get_logger("kizuna.profilesync")


@dataclass
class ProfileSyncService:
    store: SyncStore
    app: ProfileSyncApplication
    server: GrpcServer
    deliverer: Deliverer
    consumers: list[Consumer]
    link: NatsLink
    export_interval: float

    def background(self) -> list[Callable[[], Coroutine[Any, Any, None]]]:
        # One projector across replicas (events apply in stream order); deliveries too,
        # so a customer's deliveries never race each other from two replicas.
        jobs = [
            leased(self.link, "profilesync-deliveries", self.deliverer.run),
            *(leased(self.link, f"consumer-profilesync-{c.stream}", c.run) for c in self.consumers),
        ]
        if self.export_interval > 0:
            jobs.append(leased(self.link, "profilesync-exports", self.scheduled_exports))
        return jobs

    async def scheduled_exports(self) -> None:
        while True:
            await asyncio.sleep(self.export_interval)
            for connector in (await asyncio.to_thread(self.app.connectors.live)).values():
                if connector.kind == ConnectorKind.FILE_EXPORT and not connector.paused:
                    try:
                        export = await asyncio.to_thread(
                            self.app.run_export, connector.connector_id
                        )
                        log.info(
                            "export.written", connector=connector.connector_id, rows=export.rows
                        )
                    except Exception:  # one failing directory must not stop the others
                        log.exception("export.failed", connector=connector.connector_id)

    async def close(self) -> None:
        await self.link.close()
        self.store.close()
        self.app.connectors.close()


def open_state(
    config: ServiceConfig, env: Mapping[str, str]
) -> tuple[SyncStore, ConnectorsApplication]:
    """The store and the connectors: what the service and the maintenance commands share."""
    secrets_file = env.get("KIZUNA_PROFILESYNC_SECRETS_KEY_FILE")
    if not secrets_file:
        raise ConfigError("KIZUNA_PROFILESYNC_SECRETS_KEY_FILE must name the webhook secrets key")
    box = SecretBox.from_file(Path(secrets_file))
    store = open_store(config.database_url, config.sqlite_path, pool_size=config.workers)
    connectors_env = eventsourcing_env(
        config.database_url, config.data_dir / "profilesync-connectors.sqlite", pool_size=4
    )
    try:
        connectors = open_application(lambda: ConnectorsApplication(connectors_env, box))
    except BaseException:
        store.close()
        raise
    return store, connectors


def build(config: ServiceConfig, env: Mapping[str, str]) -> ProfileSyncService:
    keys = ApiKeys.load(config.required_api_keys_file)
    store, connectors = open_state(config, env)
    link = NatsLink(config.nats_url, name=SERVICE, replicas=config.nats_replicas)
    policy = RetryPolicy(
        max_attempts=env_int(env, "KIZUNA_PROFILESYNC_MAX_ATTEMPTS", 10, low=1, high=100),
        base_delay=env_float(env, "KIZUNA_PROFILESYNC_RETRY_BASE_SECONDS", 1.0, low=0.001),
        max_delay=env_float(env, "KIZUNA_PROFILESYNC_RETRY_MAX_SECONDS", 600.0, low=0.001),
    )
    deliverer = Deliverer(
        store,
        connectors,
        policy,
        timeout=env_float(env, "KIZUNA_PROFILESYNC_WEBHOOK_TIMEOUT_SECONDS", 5.0, low=0.01),
    )
    app = ProfileSyncApplication(store, connectors, on_delivery=deliverer.wake)
    projector = OwnThreads("projection")
    consumers = [
        Consumer(
            link=link,
            stream=stream,
            durable=DURABLE,
            apply=stream_handler(app, stream, projector),
            apply_batch=stream_batch_handler(app, stream, projector),
            filter_subject=subjects,
        )
        for stream, subjects in STREAMS.items()
    ]
    binding = ServiceBinding(
        SERVICE_NAME, ProfileSyncServicer(app), pb_grpc.add_ProfileSyncServiceServicer_to_server
    )
    server = GrpcServer([binding], POLICY, keys, host=config.host, port=config.port, tls=config.tls)
    interval = env_float(env, "KIZUNA_PROFILESYNC_EXPORT_INTERVAL_SECONDS", 3600.0, low=0.0)
    return ProfileSyncService(store, app, server, deliverer, consumers, link, interval)


PORT, METRICS_PORT = 50053, 9103


def run() -> None:
    """The service; with arguments, a maintenance command (kizuna_profilesync.maintenance)."""
    if len(sys.argv) > 1:
        # Imported here: the maintenance commands build on this module.
        from kizuna_profilesync.maintenance import main

        raise SystemExit(main(sys.argv[1:], os.environ))
    run_service(SERVICE, PORT, METRICS_PORT, build)
