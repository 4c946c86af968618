"""The bare gRPC echo service RecordConsent is compared with: grpc.aio, no interceptor, no
storage, bytes in and the same bytes out. Run as a process (`python -m bench.echo`), like
the services, so that both sit behind the same client and a socket."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

SERVICE = "kizuna.bench.Echo"
METHOD = f"/{SERVICE}/Echo"


async def echo(request: bytes, context: Any) -> bytes:
    return request


async def serve(host: str, port: int) -> None:
    # Same server options as kizuna_kit.server.GrpcServer, minus the interceptor.
    server = grpc.aio.server(
        options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", 4 << 20)]
    )
    # No serializers: the handler sees the request's bytes and returns them as they are.
    handlers = {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    server.add_insecure_port(f"{host}:{port}")
    await server.start()
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(0.5)


def main() -> None:
    host = os.environ.get("KIZUNA_BENCH_ECHO_HOST", "127.0.0.1")
    asyncio.run(serve(host, int(os.environ["KIZUNA_BENCH_ECHO_PORT"])))


if __name__ == "__main__":
    main()
