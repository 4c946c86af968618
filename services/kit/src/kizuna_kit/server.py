"""gRPC server bootstrap: health, reflection, the RPC interceptor and graceful shutdown."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from kizuna_kit.auth import ApiKeys
from kizuna_kit.cancellation import cancel_and_wait
from kizuna_kit.config import TlsFiles
from kizuna_kit.rpc import RpcInterceptor, RpcPolicy

log = structlog.get_logger("kizuna.server")


@dataclass(frozen=True)
class ServiceBinding:
    """A servicer and the generated function that registers it."""

    name: str  # full proto service name, e.g. "kizuna.identity.v1.IdentityService"
    servicer: Any
    register: Callable[[Any, Any], None]


class GrpcServer:
    def __init__(
        self,
        bindings: Sequence[ServiceBinding],
        policy: RpcPolicy,
        keys: ApiKeys,
        *,
        host: str = "0.0.0.0",  # noqa: S104 - a server listens on all interfaces
        port: int = 0,
        tls: TlsFiles | None = None,
    ) -> None:
        self._bindings = bindings
        self._server = grpc.aio.server(
            interceptors=[RpcInterceptor(keys, policy)],
            options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", 4 << 20)],
        )
        self.health = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        for binding in bindings:
            binding.register(binding.servicer, self._server)
        names = [b.name for b in bindings] + [reflection.SERVICE_NAME, "grpc.health.v1.Health"]
        reflection.enable_server_reflection(names, self._server)
        address = f"{host}:{port}"
        self.port: int = (
            self._server.add_insecure_port(address)
            if tls is None
            else self._server.add_secure_port(address, server_credentials(tls))
        )
        if self.port == 0:
            raise OSError(f"cannot listen on {host}:{port}")

    async def start(self) -> None:
        await self._server.start()
        for name in ["", *(b.name for b in self._bindings)]:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace: float, drain: float = 0.0) -> None:
        # Probes see NOT_SERVING first and load balancers move traffic away during
        # `drain`; then new calls are refused and in-flight ones get `grace`.
        await self.health.enter_graceful_shutdown()
        if drain > 0:
            await asyncio.sleep(drain)
        await self._server.stop(grace)

    async def wait(self) -> None:
        await self._server.wait_for_termination()


def server_credentials(tls: TlsFiles) -> grpc.ServerCredentials:
    # With a client CA every client must present a certificate it signed (grpc cannot
    # ask for one optionally); the certificate's name or a bearer key then gives scopes.
    return grpc.ssl_server_credentials(
        [(tls.key.read_bytes(), tls.cert.read_bytes())],
        root_certificates=tls.client_ca.read_bytes() if tls.client_ca else None,
        require_client_auth=tls.client_ca is not None,
    )


def use_thread_pool(workers: int) -> ThreadPoolExecutor:
    """Blocking work (event store, password hashing) runs here via asyncio.to_thread."""
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kizuna-blocking")
    asyncio.get_running_loop().set_default_executor(pool)
    return pool


async def run_until_signalled(
    server: GrpcServer,
    background: Sequence[Callable[[], Coroutine[Any, Any, None]]],
    grace: float,
    on_stop: Callable[[], Awaitable[None]] | None = None,
    drain: float = 0.0,
) -> None:
    """Serves until SIGTERM/SIGINT; then NOT_SERVING, drain, stop the background tasks."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    tasks = [asyncio.create_task(job()) for job in background]
    log.info("service.serving", port=server.port)
    waiter = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
    for task in done:
        if task is not waiter and task.exception() is not None:
            log.error("service.background_failed", exc_info=task.exception())
    log.info("service.stopping", drain_seconds=drain, grace_seconds=grace)
    await server.stop(grace, drain)
    await cancel_and_wait(tasks)
    if on_stop is not None:
        await on_stop()
    log.info("service.stopped")
