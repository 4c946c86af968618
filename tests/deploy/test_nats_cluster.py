"""The NATS configuration of deploy/k8s/base/nats, run for real: three nats-server
processes on loopback with the rendered nats.conf (only addresses and paths swapped
for local ones) form a JetStream cluster that fsyncs every write, and the services'
idempotent stream creation works against it from two "replicas" at once."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client

from kizuna_kit.nats_link import ensure_stream
from kizuna_kit.ports import free_port
from kizuna_kit.testing.waiting import eventually
from tests.deploy.rendering import documents, named, render

pytestmark = pytest.mark.integration

READY_TIMEOUT_S = 30.0


@dataclass
class Node:
    name: str
    client: int
    route: int
    http: int
    process: subprocess.Popen[bytes] | None = None


def rendered_conf() -> str:
    docs = documents(render("base/nats"))
    sts = named(docs, "StatefulSet", "kizuna-nats")
    volume = next(v for v in sts["spec"]["template"]["spec"]["volumes"] if v["name"] == "config")
    conf: str = named(docs, "ConfigMap", volume["configMap"]["name"])["data"]["nats.conf"]
    return conf


def localise(conf: str, node: Node, nodes: list[Node], home: Path) -> str:
    """The same configuration with loopback addresses and paths under `home`."""
    conf = conf.replace("listen: 0.0.0.0:4222", f"listen: 127.0.0.1:{node.client}")
    conf = conf.replace("http: 0.0.0.0:8222", f"http: 127.0.0.1:{node.http}")
    conf = conf.replace("listen: 0.0.0.0:6222", f"listen: 127.0.0.1:{node.route}")
    conf = conf.replace("pid_file: /var/run/nats/nats.pid", f"pid_file: {home / 'nats.pid'}")
    conf = conf.replace("store_dir: /data", f"store_dir: {home / 'data'}")
    for i, peer in enumerate(nodes):
        conf = conf.replace(
            f"nats://kizuna-nats-{i}.kizuna-nats-headless:6222", f"nats://127.0.0.1:{peer.route}"
        )
    assert "0.0.0.0" not in conf
    assert "kizuna-nats-headless" not in conf
    return conf


def http_json(node: Node, path: str) -> dict[str, object]:
    with urllib.request.urlopen(f"http://127.0.0.1:{node.http}{path}", timeout=2) as reply:
        document: dict[str, object] = json.load(reply)
        return document


def wait_ready(node: Node) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        try:
            # Plain /healthz is ok once the JetStream meta leader is known (the startupProbe).
            if http_json(node, "/healthz").get("status") == "ok":
                return
        except (urllib.error.URLError, OSError, ValueError):
            pass
        assert node.process is not None
        assert node.process.poll() is None, f"{node.name} exited"
        assert time.monotonic() < deadline, f"{node.name} not ready in {READY_TIMEOUT_S}s"
        time.sleep(0.1)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[Node]]:
    template = rendered_conf()
    nodes = [Node(f"kizuna-nats-{i}", free_port(), free_port(), free_port()) for i in range(3)]
    server = Path(sys.executable).parent / "nats-server"
    try:
        for node in nodes:
            home = tmp_path / node.name
            home.mkdir()
            conf = home / "nats.conf"
            conf.write_text(localise(template, node, nodes, home))
            node.process = subprocess.Popen(
                [str(server), "-c", str(conf)],
                env={"POD_NAME": node.name},
                stdout=(home / "log").open("wb"),
                stderr=subprocess.STDOUT,
            )
        for node in nodes:
            wait_ready(node)
        yield nodes
    finally:
        for node in nodes:
            if node.process is not None and node.process.poll() is None:
                node.process.terminate()
        for node in nodes:
            if node.process is not None:
                try:
                    node.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    node.process.kill()
                    node.process.wait(timeout=5)


async def jetstream_answers(client: Client) -> bool:
    await client.jetstream(timeout=2).account_info()
    return True


async def test_the_cluster_forms_and_syncs_every_write(cluster: list[Node]) -> None:
    for node in cluster:
        varz = http_json(node, "/varz")
        assert varz["server_name"] == node.name
        config = varz["jetstream"]["config"]  # type: ignore[index]
        assert config["sync_always"] is True, config

    servers = [f"nats://127.0.0.1:{n.client}" for n in cluster]
    clients = [await nats.connect(servers=servers, connect_timeout=5) for _ in range(2)]
    try:
        # A freshly formed cluster can take a moment more to answer JetStream requests.
        for client in clients:
            await eventually(lambda c=client: jetstream_answers(c), within=30)  # type: ignore[misc]
        # Two service replicas starting at once both create the stream: both succeed.
        await asyncio.gather(
            *(
                ensure_stream(c.jetstream(timeout=10), "DEPLOYCHECK", ["deploycheck.>"])
                for c in clients
            )
        )
        js = clients[0].jetstream(timeout=10)
        ack = await js.publish("deploycheck.one", b"x", headers={"Nats-Msg-Id": "deploycheck:1"})
        again = await js.publish("deploycheck.one", b"x", headers={"Nats-Msg-Id": "deploycheck:1"})
        assert (ack.seq, again.seq, again.duplicate) == (1, 1, True)
        # Replicated streams (3 copies) are what the cluster is for.
        info = await js.add_stream(name="DEPLOYCHECK3", subjects=["deploycheck3.>"], num_replicas=3)
        assert info.config.num_replicas == 3
        assert (await js.publish("deploycheck3.one", b"y")).seq == 1
        assert info.cluster is not None
        assert re.fullmatch(r"kizuna-nats-\d", info.cluster.leader or "")
    finally:
        for client in clients:
            await client.close()
