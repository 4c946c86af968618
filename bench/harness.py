"""What a benchmark run stands on: a throwaway PostgreSQL cluster, nats-servers, and the
services started as processes (so each one's memory can be read), all on free ports."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.procfs import CpuMeter, ProcessMemory, read_memory
from kizuna_consent.signing import write_new_signing_key
from kizuna_kit.auth import ALL_SCOPES, issue_keys
from kizuna_kit.natsd import NatsServer, die_with_parent
from kizuna_kit.ports import free_port
from kizuna_kit.testing.postgres import PostgresCluster
from kizuna_profilesync.secret_box import write_new_key

REPO = Path(__file__).resolve().parents[1]
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
# Nothing listens here: a service given this URL keeps its relay and consumers waiting
# (where their publishing would disturb what is measured).
NO_NATS = "nats://127.0.0.1:1"

# service -> (command, env prefix)
COMMANDS: dict[str, tuple[list[str], str]] = {
    "identity": ([sys.executable, "-m", "kizuna_identity"], "KIZUNA_IDENTITY_"),
    "consent": ([sys.executable, "-m", "kizuna_consent"], "KIZUNA_CONSENT_"),
    "profilesync": ([sys.executable, "-m", "kizuna_profilesync"], "KIZUNA_PROFILESYNC_"),
    "echo": ([sys.executable, "-m", "bench.echo"], "KIZUNA_BENCH_ECHO_"),
}


@dataclass
class ServiceProcess:
    service: str
    label: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    rest_mib: float = 0.0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> ProcessMemory:
        """SIGTERM (SIGKILL after a while); returns its memory, peak read just before."""
        peak = read_memory(self.process.pid).peak_mib
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return ProcessMemory(self.service, self.label, self.rest_mib, peak)

    def log_tail(self, size: int = 3000) -> str:
        try:
            return self.log_path.read_bytes()[-size:].decode("utf-8", errors="replace")
        except OSError:
            return ""


@dataclass
class Stack:
    root: Path
    postgres: PostgresCluster
    keys_file: Path
    token: str
    signing_key: Path
    secrets_key: Path
    running: list[ServiceProcess] = field(default_factory=list)
    memory: list[ProcessMemory] = field(default_factory=list)
    databases: int = 0
    settle_seconds: float = 1.0  # idle after a start, before "at rest" memory is read

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),)

    def database(self, name: str) -> str:
        """A new, empty database (a numbered name, so a scenario may run twice)."""
        self.databases += 1
        return self.postgres.create_database(f"{name}_{self.databases}")

    def cpu_meter(self, **services: ServiceProcess | NatsServer) -> CpuMeter:
        """CPU of this process (the client), the given services, and PostgreSQL."""
        pids: dict[str, int | str] = {"client": "self"}
        for name, service in services.items():
            pid = service.process.pid if isinstance(service, ServiceProcess) else service.pid
            if pid is not None:
                pids[name] = pid
        postmaster = self.postgres.pid
        return CpuMeter(pids, {"postgres": postmaster} if postmaster else {})

    @contextmanager
    def nats(self, name: str) -> Iterator[NatsServer]:
        """A nats-server of the scenario's own: streams are named per service (IDENTITY...),
        so a second identity on a shared server would resume after the first one's
        positions, and a consumer would meet another scenario's events."""
        server = NatsServer(self.root / f"nats-{name}")
        server.start()
        try:
            yield server
        finally:
            server.stop()

    def service_env(self) -> dict[str, str]:
        """What every service process needs (README, Configuration)."""
        return {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": str(REPO),  # for bench.echo
            "KIZUNA_API_KEYS_FILE": str(self.keys_file),
            "KIZUNA_CONSENT_SIGNING_KEY_FILE": str(self.signing_key),
            "KIZUNA_PROFILESYNC_SECRETS_KEY_FILE": str(self.secrets_key),
            "KIZUNA_PROFILESYNC_EXPORT_INTERVAL_SECONDS": "0",
            "KIZUNA_LOG_LEVEL": "warning",
            "KIZUNA_LOG_FORMAT": "json",
        }

    async def start(
        self,
        service: str,
        label: str,
        *,
        database_url: str | None = None,
        nats: NatsServer | None = None,
        env: Mapping[str, str] | None = None,
    ) -> ServiceProcess:
        """Starts `python -m <service>` on a free port; returns once it reports SERVING."""
        command, prefix = COMMANDS[service]
        port = free_port()
        data_dir = self.root / re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")
        data_dir.mkdir(parents=True, exist_ok=True)
        child_env = {
            **self.service_env(),
            prefix + "HOST": "127.0.0.1",
            prefix + "PORT": str(port),
            prefix + "METRICS_PORT": "0",
            "KIZUNA_DATA_DIR": str(data_dir),
            "KIZUNA_NATS_URL": nats.url if nats else NO_NATS,
            **({prefix + "DATABASE_URL": database_url} if database_url else {}),
            **(env or {}),
        }
        log_path = data_dir / "service.log"
        process = spawn(command, child_env, log_path)
        started = ServiceProcess(service, label, port, process, log_path)
        self.running.append(started)
        await wait_serving(started)
        await asyncio.sleep(self.settle_seconds)
        started.rest_mib = read_memory(process.pid).rss_mib
        return started

    def stop(self, service: ServiceProcess) -> None:
        if service in self.running:
            self.running.remove(service)
            self.memory.append(service.stop())

    def stop_all(self) -> None:
        for service in list(self.running):
            self.stop(service)


def balanced_channel(services: Sequence[ServiceProcess]) -> grpc.aio.Channel:
    """One channel to all of `services`, each call going to the next (gRPC round_robin)."""
    target = "ipv4:" + ",".join(service.address for service in services)
    return grpc.aio.insecure_channel(target, options=[("grpc.lb_policy_name", "round_robin")])


def spawn(command: list[str], env: Mapping[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            command,
            env=env,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(signal.SIGTERM),  # no orphans if we are killed
        )


async def wait_serving(service: ServiceProcess) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    async with grpc.aio.insecure_channel(service.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if service.process.poll() is not None:
                break
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{service.label} did not start:\n{service.log_tail()}")


@contextmanager
def open_stack(root: Path) -> Iterator[Stack]:
    """PostgreSQL up, keys written; everything stopped on the way out."""
    root.mkdir(parents=True, exist_ok=True)
    keys_file = root / "api-keys.json"
    token = issue_keys(keys_file, {"bench": ALL_SCOPES})["bench"]
    signing_key, secrets_key = root / "signing.pem", root / "secrets.key"
    write_new_signing_key(signing_key)
    write_new_key(secrets_key)
    postgres = PostgresCluster(root / "postgres")
    stack = Stack(root, postgres, keys_file, token, signing_key, secrets_key)
    try:
        postgres.start()
        yield stack
    finally:
        stack.stop_all()
        postgres.close()
