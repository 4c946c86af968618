"""Running a composed service process: config, logging, metrics, serve until a signal.

Each service's composition root (its `main`) only builds its parts; this runs them.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any, Protocol

from kizuna_kit.auth import KeyFileError
from kizuna_kit.config import ConfigError, ServiceConfig
from kizuna_kit.logging import configure_logging, get_logger
from kizuna_kit.metrics import serve_metrics
from kizuna_kit.server import GrpcServer, run_until_signalled, use_thread_pool

# Allocations between collections of the youngest generation (CPython's default is 700).
YOUNG_THRESHOLD = 10_000


class Composed(Protocol):
    server: GrpcServer

    def background(self) -> Sequence[Callable[[], Coroutine[Any, Any, None]]]: ...

    async def close(self) -> None: ...


Build = Callable[[ServiceConfig, Mapping[str, str]], Composed]


async def serve(config: ServiceConfig, env: Mapping[str, str], build: Build) -> None:
    use_thread_pool(config.workers)
    service = build(config, env)
    tune_garbage_collector()
    metrics_port = serve_metrics(config.metrics_port)
    get_logger(f"kizuna.{config.service}").info(
        "service.starting",
        grpc_port=service.server.port,
        metrics_port=metrics_port,
        database="postgresql" if config.database_url else str(config.sqlite_path),
    )
    close: Callable[[], Awaitable[None]] = service.close
    await run_until_signalled(
        service.server,
        service.background(),
        config.shutdown_grace_seconds,
        close,
        drain=config.shutdown_drain_seconds,
    )


def tune_garbage_collector() -> None:
    """What start-up built (modules, clients, pools) lives as long as the process: frozen,
    the cyclic collector stops walking it on every full collection. Requests allocate
    many short-lived containers; collecting the youngest generation less often spares
    most of the passes that would find nothing (the objects die by reference count)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def run_service(name: str, port: int, metrics_port: int, build: Build) -> None:
    """The process entry point: configuration errors are one line and exit status 2."""
    try:
        config = ServiceConfig.from_env(name, default_port=port, default_metrics_port=metrics_port)
        configure_logging(config.log_level, config.log_format, service=name)
        asyncio.run(serve(config, os.environ, build))
    except (ConfigError, KeyFileError) as exc:
        print(f"kizuna-{name}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
