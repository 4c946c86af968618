"""Composition root of the identity service: the only place that wires things together."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

from kizuna.identity.v1 import identity_pb2_grpc as pb_grpc
from kizuna_identity.api import POLICY, SERVICE_NAME, IdentityServicer
from kizuna_identity.application import IdentityApplication
from kizuna_identity.lockouts import SharedLoginThrottle, open_lockouts
from kizuna_identity.passwords import Argon2Params, PasswordHasher
from kizuna_identity.wire import STREAM, SUBJECTS, translator
from kizuna_kit.auth import ApiKeys
from kizuna_kit.config import ServiceConfig, env_int
from kizuna_kit.eventstore import eventsourcing_env, open_application
from kizuna_kit.lease import leased
from kizuna_kit.nats_link import NatsLink
from kizuna_kit.relay import Relay
from kizuna_kit.server import GrpcServer, ServiceBinding
from kizuna_kit.service import run_service

SERVICE = "identity"


def argon2_params(env: Mapping[str, str]) -> Argon2Params:
    # Lower bounds are OWASP's minimum for argon2id; only tests may go below via KIZUNA_TESTING.
    floor = 8 if env.get("KIZUNA_TESTING") == "1" else 19 * 1024
    return Argon2Params(
        memory_kib=env_int(
            env, "KIZUNA_IDENTITY_ARGON2_MEMORY_KIB", 19 * 1024, low=floor, high=1 << 22
        ),
        time_cost=env_int(env, "KIZUNA_IDENTITY_ARGON2_TIME_COST", 2, low=1, high=100),
        parallelism=env_int(env, "KIZUNA_IDENTITY_ARGON2_PARALLELISM", 1, low=1, high=64),
    )


@dataclass
class IdentityService:
    """The wired service; `serve` runs it until a signal, tests start and stop it directly."""

    app: IdentityApplication
    server: GrpcServer
    relay: Relay
    link: NatsLink
    throttle: SharedLoginThrottle

    def background(self) -> list[Callable[[], Coroutine[Any, Any, None]]]:
        return [leased(self.link, "relay-identity", self.relay.run)]

    async def close(self) -> None:
        await self.link.close()
        self.app.close()
        self.throttle.close()


def build(config: ServiceConfig, env: Mapping[str, str]) -> IdentityService:
    keys = ApiKeys.load(config.required_api_keys_file)
    link = NatsLink(config.nats_url, name=SERVICE, replicas=config.nats_replicas)
    wake: list[Callable[[], None]] = []
    throttle = open_lockouts(config.database_url, config.data_dir / "identity-lockouts.sqlite")
    app = open_application(
        lambda: IdentityApplication(
            eventsourcing_env(config.database_url, config.sqlite_path, pool_size=config.workers),
            hasher=PasswordHasher(argon2_params(env)),
            throttle=throttle,
            on_recorded=lambda: wake[0]() if wake else None,
        )
    )
    relay = Relay(
        service=SERVICE,
        stream=STREAM,
        subjects=SUBJECTS,
        log_reader=app.recorder,
        translate=translator(app.mapper),
        link=link,
    )
    wake.append(relay.wake)
    binding = ServiceBinding(
        SERVICE_NAME, IdentityServicer(app), pb_grpc.add_IdentityServiceServicer_to_server
    )
    server = GrpcServer([binding], POLICY, keys, host=config.host, port=config.port, tls=config.tls)
    return IdentityService(app, server, relay, link, throttle)


def run() -> None:
    run_service(SERVICE, 50051, 9101, build)
