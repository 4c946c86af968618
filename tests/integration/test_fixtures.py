"""The test-server fixtures themselves, exercised against the real servers."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import nats
import psycopg
import pytest

from kizuna_kit.testing import NatsServer, PostgresCluster, free_port

pytestmark = pytest.mark.integration

STREAM = "FIXTURE_TEST"
SUBJECT = "fixture.test"


def _pid_alive(pid: int) -> bool:
    # Zombies count as dead: an unreaped, SIGKILLed process serves nothing.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _port_accepts(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


# -- ports ------------------------------------------------------------------


def test_free_port_is_bindable() -> None:
    port = free_port()
    assert 1024 <= port <= 65535
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))


# -- NATS -------------------------------------------------------------------


async def _publish(url: str, payloads: list[bytes], *, create: bool) -> int:
    nc = await nats.connect(url, connect_timeout=5, allow_reconnect=False)
    try:
        js = nc.jetstream()
        if create:
            await js.add_stream(name=STREAM, subjects=[f"{SUBJECT}.>"])
        for i, payload in enumerate(payloads):
            ack = await js.publish(f"{SUBJECT}.{i}", payload)
            assert ack.stream == STREAM
        info = await js.stream_info(STREAM)
        return info.state.messages
    finally:
        await nc.close()


async def _read_all(url: str) -> list[bytes]:
    nc = await nats.connect(url, connect_timeout=5, allow_reconnect=False)
    try:
        js = nc.jetstream()
        info = await js.stream_info(STREAM)
        out: list[bytes] = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(STREAM, seq)
            assert msg.data is not None
            out.append(msg.data)
        return out
    finally:
        await nc.close()


def test_nats_jetstream_answers(nats_server: NatsServer) -> None:
    assert nats_server.url == f"nats://127.0.0.1:{nats_server.port}"
    assert nats_server.is_running
    count = asyncio.run(_publish(nats_server.url, [b"a", b"b", b"c"], create=True))
    assert count == 3
    assert nats_server.log_path.is_file()


def test_nats_jetstream_survives_kill(nats_server: NatsServer) -> None:
    payloads = [f"msg-{i}".encode() for i in range(20)]
    assert asyncio.run(_publish(nats_server.url, payloads, create=True)) == 20
    pid, port = nats_server.pid, nats_server.port
    assert pid is not None

    nats_server.kill()
    assert not nats_server.is_running
    assert not _pid_alive(pid)
    assert not _port_accepts(port)

    nats_server.start()
    assert nats_server.port == port
    assert asyncio.run(_read_all(nats_server.url)) == payloads
    # And the restarted server keeps accepting writes to the recovered stream.
    assert asyncio.run(_publish(nats_server.url, [b"after"], create=False)) == 21


def test_nats_stop_then_start(nats_server: NatsServer) -> None:
    asyncio.run(_publish(nats_server.url, [b"x"], create=True))
    nats_server.stop()
    assert not nats_server.is_running
    nats_server.start()
    assert asyncio.run(_read_all(nats_server.url)) == [b"x"]


def test_nats_context_manager_cleans_up(tmp_path: Path) -> None:
    with NatsServer(tmp_path / "nats") as server:
        pid = server.pid
        assert pid is not None
        assert _pid_alive(pid)
        assert asyncio.run(_publish(server.url, [b"x"], create=True)) == 1
    assert not _pid_alive(pid)
    assert not server.is_running


# -- PostgreSQL ---------------------------------------------------------------


def test_postgres_answers(postgres_url: str) -> None:
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        row = conn.execute("SELECT current_database(), current_setting('fsync')").fetchone()
    assert row == (urlparse(postgres_url).path.lstrip("/"), "on")


_seen_postgres_urls: list[str] = []


@pytest.mark.parametrize("run", [1, 2])
def test_postgres_url_gives_distinct_databases(postgres_url: str, run: int) -> None:
    assert postgres_url not in _seen_postgres_urls
    # Fails if an earlier run's database (and its table) were handed out again.
    with psycopg.connect(postgres_url) as conn:
        conn.execute("CREATE TABLE marker (run int NOT NULL)")
        conn.execute("INSERT INTO marker VALUES (%s)", (run,))
    for other in _seen_postgres_urls:
        # Earlier databases are dropped at teardown; it must not be this one.
        assert urlparse(other).path != urlparse(postgres_url).path
    _seen_postgres_urls.append(postgres_url)


def test_postgres_committed_row_survives_kill(tmp_path: Path) -> None:
    # Own cluster: killing the shared session cluster would disturb other tests.
    with PostgresCluster(tmp_path) as cluster:
        url = cluster.create_database("durable")
        assert url == f"postgresql://postgres@127.0.0.1:{cluster.port}/durable"
        with psycopg.connect(url) as conn:
            conn.execute("CREATE TABLE t (v text NOT NULL)")
            conn.execute("INSERT INTO t VALUES ('committed')")
        # An open, uncommitted transaction must be lost by the crash.
        pending = psycopg.connect(url)
        pending.execute("INSERT INTO t VALUES ('uncommitted')")

        pid, port = cluster.pid, cluster.port
        assert pid is not None
        cluster.kill()
        pending.close()
        assert not cluster.is_running
        assert not _pid_alive(pid)
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(url, connect_timeout=2).close()

        cluster.start()
        assert cluster.port == port
        with psycopg.connect(url) as conn:
            rows = conn.execute("SELECT v FROM t ORDER BY v").fetchall()
        assert rows == [("committed",)]
        # A second crash/recovery cycle works too (stale lock files handled).
        cluster.kill()
        cluster.start()
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT count(*) FROM t").fetchone() == (1,)


def test_postgres_restart_and_close(tmp_path: Path) -> None:
    cluster = PostgresCluster(tmp_path)
    try:
        cluster.start()
        url = cluster.create_database("kept")
        with psycopg.connect(url) as conn:
            conn.execute("CREATE TABLE t AS SELECT 42 AS v")
        old_pid = cluster.pid
        cluster.restart()
        assert cluster.pid != old_pid
        with psycopg.connect(cluster.url_for("kept")) as conn:
            assert conn.execute("SELECT v FROM t").fetchone() == (42,)
        cluster.drop_database("kept")
        with psycopg.connect(cluster.url_for("postgres")) as conn:
            found = conn.execute("SELECT 1 FROM pg_database WHERE datname = 'kept'").fetchone()
        assert found is None
        pid = cluster.pid
        assert pid is not None
    finally:
        cluster.close()
    assert not _pid_alive(pid)
    if os.geteuid() == 0:
        # As root the cluster lives in its own /tmp dir, which close() removes.
        assert not cluster.data_dir.exists()
