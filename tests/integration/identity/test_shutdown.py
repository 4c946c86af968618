"""Graceful shutdown: health says NOT_SERVING first, calls keep working while traffic drains."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kizuna.identity.v1 import identity_pb2 as pb
from kizuna_kit.testing.waiting import eventually
from tests.integration.identity.conftest import Identity

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_not_serving_before_the_server_stops(identity: Identity) -> None:
    port = identity.service.server.port
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        assert (
            await health.Check(health_pb2.HealthCheckRequest())
        ).status == health_pb2.HealthCheckResponse.SERVING
        stopping = asyncio.create_task(identity.service.server.stop(grace=1, drain=1.0))

        async def not_serving() -> bool:
            reply = await health.Check(health_pb2.HealthCheckRequest())
            return bool(reply.status == health_pb2.HealthCheckResponse.NOT_SERVING)

        await eventually(not_serving, within=1.0, every=0.01)  # within the drain
        assert not stopping.done()
        # Still answering while load balancers move away.
        await identity.call("ListSites", pb.ListSitesRequest())
        await stopping
        with pytest.raises(grpc.aio.AioRpcError):
            await identity.call("ListSites", pb.ListSitesRequest())
