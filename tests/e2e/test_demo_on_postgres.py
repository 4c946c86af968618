"""The three services as processes on PostgreSQL and nats-server, and the Tanaka-san
story (`kizuna demo`) over real gRPC: webhook delivery and consent export included."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kizuna_consent.signing import write_new_signing_key
from kizuna_kit.natsd import NatsServer
from kizuna_kit.ports import free_port
from kizuna_kit.testing.postgres import PostgresCluster
from kizuna_profilesync.secret_box import write_new_key
from tests.conftest import Keys
from tests.e2e.processes import all_serving, logged_errors

pytestmark = pytest.mark.e2e
MODULES = {
    "identity": "kizuna_identity",
    "consent": "kizuna_consent",
    "profilesync": "kizuna_profilesync",
}


@dataclass(frozen=True)
class Stack:
    addresses: dict[str, str]
    logs: Path


@pytest.fixture
def stack(
    tmp_path: Path, keys: Keys, postgres_cluster: PostgresCluster, nats_server: NatsServer
) -> Iterator[Stack]:
    write_new_signing_key(tmp_path / "signing.pem")
    write_new_key(tmp_path / "secrets.key")
    env = {
        **os.environ,
        "KIZUNA_NATS_URL": nats_server.url,
        "KIZUNA_API_KEYS_FILE": str(keys.path),
        "KIZUNA_CONSENT_SIGNING_KEY_FILE": str(tmp_path / "signing.pem"),
        "KIZUNA_PROFILESYNC_SECRETS_KEY_FILE": str(tmp_path / "secrets.key"),
        "KIZUNA_DATA_DIR": str(tmp_path / "data"),
        "KIZUNA_IDENTITY_ARGON2_MEMORY_KIB": "1024",
        "KIZUNA_IDENTITY_ARGON2_TIME_COST": "1",
        "KIZUNA_LOG_FORMAT": "json",
    }
    addresses = {}
    for name in MODULES:
        port = free_port()
        env[f"KIZUNA_{name.upper()}_PORT"] = str(port)
        env[f"KIZUNA_{name.upper()}_METRICS_PORT"] = str(free_port())
        env[f"KIZUNA_{name.upper()}_DATABASE_URL"] = postgres_cluster.create_database(
            f"demo_{name}_{port}"
        )
        addresses[name] = f"127.0.0.1:{port}"
    processes = []
    for name, module in MODULES.items():
        log = (tmp_path / f"{name}.log").open("wb")
        processes.append(
            subprocess.Popen([sys.executable, "-m", module], env=env, stdout=log, stderr=log)
        )
    yield Stack(addresses, tmp_path)
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        assert process.wait(timeout=30) == 0, "a service did not stop cleanly on SIGTERM"


async def test_the_tanaka_story_on_postgres(stack: Stack, keys: Keys) -> None:
    await all_serving(stack.addresses.values(), stack.logs)
    env = {
        **os.environ,
        "KIZUNA_TOKEN": keys.admin,
        "KIZUNA_IDENTITY_ADDR": stack.addresses["identity"],
        "KIZUNA_CONSENT_ADDR": stack.addresses["consent"],
        "KIZUNA_PROFILESYNC_ADDR": stack.addresses["profilesync"],
    }
    kizuna = str(Path(sys.executable).parent / "kizuna")
    result = await asyncio.to_thread(
        subprocess.run,
        [kizuna, "demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, "\n".join(
        (result.stdout, result.stderr, logged_errors(stack.logs))
    )
    story = result.stdout
    assert "missing there: ['postal_address']" in story
    assert "after she adds it, missing: nothing" in story
    assert "the mail tool received customer.upserted: Hanako Tanaka" in story
    assert "the mail tool received customer.deleted (reason: consent)" in story
    assert "two weeks ago                    NOT_GIVEN" in story
    assert "yesterday                        GRANTED" in story
    assert "VerifyLedger: ok=True, 3 records" in story
    assert "consent export: 2 rows" in story
