"""kill -9 of profile-sync mid-stream: after a restart nothing is lost, nothing applied twice."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from kizuna.identity.v1 import identity_pb2 as ipb
from kizuna.identity.v1.identity_pb2_grpc import IdentityServiceStub
from kizuna.profilesync.v1 import profilesync_pb2 as pb
from kizuna.profilesync.v1.profilesync_pb2_grpc import ProfileSyncServiceStub
from kizuna_kit.cancellation import cancel_and_wait
from kizuna_kit.natsd import NatsServer
from kizuna_kit.ports import free_port
from kizuna_kit.testing.waiting import eventually
from kizuna_profilesync.secret_box import write_new_key
from tests.conftest import Keys
from tests.e2e.processes import serving
from tests.integration.identity.conftest import start_identity
from tests.integration.profilesync.service import SECRET, Receiver, running_receiver

pytestmark = pytest.mark.e2e
CUSTOMERS = 300


class Process:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "kizuna_profilesync"], env=self.env, stdout=out, stderr=out
            )

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()


@pytest.fixture
def profilesync(
    tmp_path: Path, keys: Keys, postgres_url: str, nats_server: NatsServer
) -> Iterator[tuple[Process, str]]:
    key_file = tmp_path / "secrets.key"
    write_new_key(key_file)
    port = free_port()
    env = {
        **os.environ,
        "KIZUNA_PROFILESYNC_PORT": str(port),
        "KIZUNA_PROFILESYNC_METRICS_PORT": str(free_port()),
        "KIZUNA_PROFILESYNC_DATABASE_URL": postgres_url,
        "KIZUNA_NATS_URL": nats_server.url,
        "KIZUNA_API_KEYS_FILE": str(keys.path),
        "KIZUNA_PROFILESYNC_SECRETS_KEY_FILE": str(key_file),
        "KIZUNA_DATA_DIR": str(tmp_path / "data"),
        "KIZUNA_PROFILESYNC_RETRY_BASE_SECONDS": "0.01",
        "KIZUNA_PROFILESYNC_RETRY_MAX_SECONDS": "0.1",
        "KIZUNA_LOG_FORMAT": "json",
    }
    process = Process(env, tmp_path / "profilesync.log")
    process.start()
    yield process, f"127.0.0.1:{port}"
    if process.process is not None and process.process.poll() is None:
        process.process.terminate()
        process.process.wait(timeout=30)


async def test_kill_9_mid_stream(
    tmp_path: Path, keys: Keys, nats_server: NatsServer, profilesync: tuple[Process, str]
) -> None:
    process, address = profilesync
    auth = Keys.auth(keys.admin)
    await eventually(lambda: serving(address), within=60)
    identity, relay = await start_identity(tmp_path / "identity", keys, None, nats_server.url, True)
    receiver = Receiver()
    async with (
        running_receiver(receiver),
        grpc.aio.insecure_channel(f"127.0.0.1:{identity.server.port}") as id_channel,
        grpc.aio.insecure_channel(address) as sync_channel,
    ):
        ids = IdentityServiceStub(id_channel)
        sync = ProfileSyncServiceStub(sync_channel)
        await sync.CreateConnector(
            pb.CreateConnectorRequest(
                connector_id="crm",
                kind=pb.CONNECTOR_KIND_WEBHOOK,
                fields=["given_name"],
                webhook=pb.WebhookConfig(url=f"http://127.0.0.1:{receiver.port}/", secret=SECRET),
            ),
            metadata=auth,
        )
        await ids.CreateSite(
            ipb.CreateSiteRequest(site_id="shop", display_name="Shop", site_group="g"),
            metadata=auth,
        )
        made: list[str] = []

        async def writer(n: int) -> None:
            for i in range(n, CUSTOMERS, 4):
                reply = await ids.RegisterCustomer(
                    ipb.RegisterCustomerRequest(
                        site_id="shop",
                        login_id=f"k{i}@example.jp",
                        password="correct horse battery",
                        profile=ipb.Profile(given_name=f"G{i}"),
                    ),
                    metadata=auth,
                )
                made.append(reply.customer_id)

        writers = asyncio.gather(*(writer(n) for n in range(4)))
        await eventually(lambda: len(receiver.applied) >= 60, within=60)
        process.kill()  # kill -9 while events keep coming
        await writers
        process.start()
        await eventually(lambda: serving(address), within=60)
        await eventually(lambda: len(receiver.state) == CUSTOMERS, within=120)

        status = await sync.GetConnectorStatus(
            pb.GetConnectorStatusRequest(connector_id="crm"), metadata=auth
        )
        assert status.dead_lettered == 0
        # One delivery per registration: none lost, none applied twice.
        assert len(receiver.applied) == CUSTOMERS
        assert sorted(receiver.state) == sorted(made)
        for customer in made[:20]:
            profile = await sync.GetProfile(
                pb.GetProfileRequest(customer_id=customer), metadata=auth
            )
            assert receiver.state[customer] == {"given_name": profile.profile.given_name}
    if relay is not None:
        await cancel_and_wait([relay])
    await identity.server.stop(0)
    await identity.close()
