"""pytest plugin: fixtures backed by real NATS and PostgreSQL servers.

Load with ``pytest_plugins = ["kizuna_kit.testing.plugin"]``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from kizuna_kit.natsd import NatsServer
from kizuna_kit.testing.postgres import PostgresCluster

__all__ = ["nats_server", "postgres_cluster", "postgres_url"]


@pytest.fixture
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """A fresh JetStream-enabled nats-server, stopped after the test.

    Tests may kill()/stop()/start() it; teardown copes with any state.
    """
    # mktemp rather than tmp_path so the server never shares a dir with the test's files.
    server = NatsServer(tmp_path_factory.mktemp("nats"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresCluster]:
    """One PostgreSQL cluster shared by the whole session (initdb is slow).

    Tests that need to kill or restart a server should build their own
    PostgresCluster instead of disturbing this shared one.
    """
    cluster = PostgresCluster(tmp_path_factory.mktemp("postgres"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> Iterator[str]:
    """URL of a new, empty database in the session cluster; dropped afterwards."""
    name = f"test_{uuid.uuid4().hex}"
    url = postgres_cluster.create_database(name)
    yield url
    # Dropping keeps a long session from filling the disk; skipped if a test
    # took the shared cluster down, since there is nothing left to drop from.
    if postgres_cluster.is_running:
        postgres_cluster.drop_database(name)
