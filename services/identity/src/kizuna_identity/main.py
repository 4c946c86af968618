"""Composition root of the identity service: the only place that wires things together."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from kizuna.identity.v1 import identity_pb2_grpc as pb_grpc
from kizuna_identity.api import POLICY, SERVICE_NAME, IdentityServicer
from kizuna_identity.application import IdentityApplication
from kizuna_identity.passwords import Argon2Params, PasswordHasher
from kizuna_identity.wire import STREAM, SUBJECTS, translator
from kizuna_kit.auth import ApiKeys, KeyFileError
from kizuna_kit.config import ConfigError, ServiceConfig, env_int
from kizuna_kit.eventstore import eventsourcing_env
from kizuna_kit.logging import configure_logging, get_logger
from kizuna_kit.metrics import serve_metrics
from kizuna_kit.nats_link import NatsLink
from kizuna_kit.relay import Relay
from kizuna_kit.server import GrpcServer, ServiceBinding, run_until_signalled, use_thread_pool

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

    async def close(self) -> None:
        await self.link.close()
        self.app.close()


def build(config: ServiceConfig, env: Mapping[str, str]) -> IdentityService:
    if config.api_keys_file is None:
        raise ConfigError("KIZUNA_API_KEYS_FILE must name the API keys file")
    keys = ApiKeys.load(config.api_keys_file)
    link = NatsLink(config.nats_url, name=SERVICE)
    wake: list[Callable[[], None]] = []
    app = IdentityApplication(
        eventsourcing_env(config.database_url, config.sqlite_path, pool_size=config.workers),
        hasher=PasswordHasher(argon2_params(env)),
        on_recorded=lambda: wake[0]() if wake else None,
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
    server = GrpcServer([binding], POLICY, keys, host=config.host, port=config.port)
    return IdentityService(app, server, relay, link)


async def serve(config: ServiceConfig, env: Mapping[str, str]) -> None:
    use_thread_pool(config.workers)
    service = build(config, env)
    metrics_port = serve_metrics(config.metrics_port)
    get_logger("kizuna.identity").info(
        "identity.starting",
        grpc_port=service.server.port,
        metrics_port=metrics_port,
        database="postgresql" if config.database_url else str(config.sqlite_path),
    )
    await run_until_signalled(
        service.server,
        [service.relay.run],
        config.shutdown_grace_seconds,
        service.close,
        drain=config.shutdown_drain_seconds,
    )


def run() -> None:
    env = os.environ
    try:
        config = ServiceConfig.from_env(SERVICE, default_port=50051, default_metrics_port=9101)
        configure_logging(config.log_level, config.log_format, service=SERVICE)
        asyncio.run(serve(config, env))
    except (ConfigError, KeyFileError) as exc:
        print(f"kizuna-identity: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
