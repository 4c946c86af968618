"""Composition root of the consent service."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kizuna.consent.v1 import consent_pb2_grpc as pb_grpc
from kizuna_consent.api import POLICY, SERVICE_NAME, ConsentServicer
from kizuna_consent.application import ConsentApplication
from kizuna_consent.identity_events import DURABLE, FILTER, identity_handler
from kizuna_consent.signing import load_signing_key
from kizuna_consent.storage.factory import open_store
from kizuna_consent.storage.interface import LedgerStore
from kizuna_consent.wire import STREAM, SUBJECTS
from kizuna_kit.auth import ApiKeys
from kizuna_kit.config import ConfigError, ServiceConfig
from kizuna_kit.consumer import Consumer
from kizuna_kit.lease import leased
from kizuna_kit.nats_link import NatsLink
from kizuna_kit.relay import Relay
from kizuna_kit.server import GrpcServer, ServiceBinding
from kizuna_kit.service import run_service
from kizuna_kit.wire import from_outbox

SERVICE = "consent"
IDENTITY_STREAM = "IDENTITY"


@dataclass
class ConsentService:
    store: LedgerStore
    app: ConsentApplication
    server: GrpcServer
    relay: Relay
    consumer: Consumer
    link: NatsLink

    def background(self) -> list[Callable[[], Coroutine[Any, Any, None]]]:
        return [
            leased(self.link, "relay-consent", self.relay.run),
            leased(self.link, "consumer-consent-identity", self.consumer.run),
        ]

    async def close(self) -> None:
        await self.link.close()
        self.store.close()


def signing_key_path(env: Mapping[str, str]) -> Path:
    path = env.get("KIZUNA_CONSENT_SIGNING_KEY_FILE")
    if not path:
        raise ConfigError("KIZUNA_CONSENT_SIGNING_KEY_FILE must name the ledger's Ed25519 key")
    return Path(path)


def build(config: ServiceConfig, env: Mapping[str, str]) -> ConsentService:
    keys = ApiKeys.load(config.required_api_keys_file)
    signing_key = load_signing_key(signing_key_path(env))
    store = open_store(config.database_url, config.sqlite_path, pool_size=config.workers)
    link = NatsLink(config.nats_url, name=SERVICE, replicas=config.nats_replicas)
    wake: list[Callable[[], None]] = []
    app = ConsentApplication(store, signing_key, on_recorded=lambda: wake[0]() if wake else None)
    relay = Relay(
        service=SERVICE,
        stream=STREAM,
        subjects=SUBJECTS,
        log_reader=store,
        translate=from_outbox,
        link=link,
    )
    wake.append(relay.wake)
    consumer = Consumer(
        link=link,
        stream=IDENTITY_STREAM,
        durable=DURABLE,
        apply=identity_handler(store),
        filter_subject=FILTER,
    )
    binding = ServiceBinding(
        SERVICE_NAME, ConsentServicer(app), pb_grpc.add_ConsentServiceServicer_to_server
    )
    server = GrpcServer([binding], POLICY, keys, host=config.host, port=config.port, tls=config.tls)
    return ConsentService(store, app, server, relay, consumer, link)


def run() -> None:
    run_service(SERVICE, 50052, 9102, build)
