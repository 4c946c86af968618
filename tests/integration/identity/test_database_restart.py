"""Identity rides out a PostgreSQL restart: pooled connections die, requests still succeed."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from kizuna.identity.v1 import identity_pb2 as pb
from kizuna.identity.v1.identity_pb2_grpc import IdentityServiceStub
from kizuna_kit.testing.postgres import PostgresCluster
from tests.conftest import Keys
from tests.integration.identity.conftest import start_identity

pytestmark = pytest.mark.integration


async def test_requests_succeed_after_postgres_restarts(tmp_path: Path, keys: Keys) -> None:
    cluster = PostgresCluster(tmp_path / "pg")
    cluster.start()
    try:
        url = cluster.create_database("identity")
        service, _ = await start_identity(tmp_path, keys, url, "nats://127.0.0.1:1", relay=False)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{service.server.port}")
        stub, auth = IdentityServiceStub(channel), Keys.auth(keys.admin)
        try:
            await stub.CreateSite(
                pb.CreateSiteRequest(site_id="shop", display_name="Shop", site_group="g"),
                metadata=auth,
            )

            async def register(login: str) -> str:
                reply = await stub.RegisterCustomer(
                    pb.RegisterCustomerRequest(
                        site_id="shop", login_id=login, password="correct horse battery"
                    ),
                    metadata=auth,
                    timeout=30,
                )
                return str(reply.customer_id)

            # Several in flight, so the pool holds several connections when the server goes.
            first = [await register(f"before{i}@example.jp") for i in range(4)]
            cluster.restart()
            after = await register("after@example.jp")
            await stub.UpdateProfile(
                pb.UpdateProfileRequest(
                    customer_id=first[0],
                    profile=pb.Profile(given_name="Hanako"),
                    update_mask=FieldMask(paths=["given_name"]),
                ),
                metadata=auth,
                timeout=30,
            )
            for customer_id, name in ((first[0], "Hanako"), (after, "")):
                got = await stub.GetCustomer(
                    pb.GetCustomerRequest(customer_id=customer_id), metadata=auth, timeout=30
                )
                assert got.customer.profile.given_name == name
        finally:
            await channel.close()
            await service.server.stop(0)
            await service.close()
    finally:
        cluster.close()
