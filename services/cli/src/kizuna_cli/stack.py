"""`kizuna up`: nats-server and every service as processes on this machine, SQLite storage.

Data lives in the data directory (default .kizuna/), so a second run reuses it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import urlparse

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kizuna_consent.signing import write_new_signing_key
from kizuna_kit.auth import ALL_SCOPES, AUDITOR_SCOPES, issue_keys
from kizuna_kit.natsd import NatsServer, die_with_parent
from kizuna_profilesync.secret_box import write_new_key

READY_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 20.0


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    module: str
    port: int
    metrics_port: int

    def env_port(self, env: Mapping[str, str]) -> int:
        prefix = f"KIZUNA_{self.name.upper().replace('-', '')}_"
        return int(env.get(prefix + "PORT") or self.port)


SERVICES = [
    ServiceSpec("identity", "kizuna_identity", 50051, 9101),
    ServiceSpec("consent", "kizuna_consent", 50052, 9102),
    ServiceSpec("profile-sync", "kizuna_profilesync", 50053, 9103),
]


def ensure_keys(data_dir: Path) -> Path:
    """The API keys file, with admin and auditor tokens beside it, made once."""
    keys_file = data_dir / "api-keys.json"
    admin, auditor = data_dir / "admin.token", data_dir / "auditor.token"
    if keys_file.exists() and admin.exists() and auditor.exists():
        return keys_file
    tokens = issue_keys(keys_file, {"admin": ALL_SCOPES, "auditor": AUDITOR_SCOPES})
    for path, key_id in ((admin, "admin"), (auditor, "auditor")):
        path.write_text(tokens[key_id] + "\n")
        path.chmod(0o600)
    return keys_file


def _pump(prefix: str, stream: IO[str]) -> None:
    for line in stream:
        sys.stdout.write(f"{prefix} | {line}")
        sys.stdout.flush()


def wait_serving(port: int, process: subprocess.Popen[str], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return False
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return True
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    return False


def stop_all(processes: list[tuple[str, subprocess.Popen[str]]]) -> None:
    for _, process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    for _, process in processes:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def up(data_dir: Path, env: Mapping[str, str]) -> int:
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    keys_file = ensure_keys(data_dir)
    signing_key = data_dir / "consent-signing-key.pem"
    if not signing_key.exists():
        write_new_signing_key(signing_key)  # a development key; operators bring their own
    secrets_key = data_dir / "profilesync-secrets.key"
    if not secrets_key.exists():
        write_new_key(secrets_key)
    nats_url = env.get("KIZUNA_NATS_URL") or "nats://127.0.0.1:4222"
    nats = NatsServer(data_dir / "nats", port=urlparse(nats_url).port or 4222)
    print(f"kizuna: starting nats-server on {nats.url} (JetStream data in {nats.store_dir})")
    nats.start()
    child_env = {
        **env,
        "KIZUNA_DATA_DIR": str(data_dir),
        "KIZUNA_API_KEYS_FILE": str(keys_file),
        "KIZUNA_CONSENT_SIGNING_KEY_FILE": str(signing_key),
        "KIZUNA_PROFILESYNC_SECRETS_KEY_FILE": str(secrets_key),
        "KIZUNA_NATS_URL": nats.url,
        "KIZUNA_LOG_FORMAT": env.get("KIZUNA_LOG_FORMAT") or "console",
        "PYTHONUNBUFFERED": "1",
    }
    processes: list[tuple[str, subprocess.Popen[str]]] = []
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    width = max(len(s.name) for s in SERVICES)
    try:
        for spec in SERVICES:
            process = subprocess.Popen(
                [sys.executable, "-m", spec.module],
                env=child_env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,  # Ctrl-C reaches us; we stop the children in order.
                preexec_fn=die_with_parent(signal.SIGTERM),  # and if we are killed, they stop
            )
            processes.append((spec.name, process))
            assert process.stdout is not None
            threading.Thread(
                target=_pump, args=(spec.name.ljust(width), process.stdout), daemon=True
            ).start()
            if not wait_serving(spec.env_port(child_env), process, READY_TIMEOUT_SECONDS):
                print(f"kizuna: {spec.name} did not start; see its lines above", file=sys.stderr)
                return 1
        print_summary(data_dir, nats.url, child_env)
        while not stop.is_set():
            for name, process in processes:
                if process.poll() is not None:
                    print(f"kizuna: {name} exited with {process.returncode}", file=sys.stderr)
                    return 1
            stop.wait(0.5)
        print("kizuna: stopping")
        return 0
    finally:
        stop_all(processes)
        nats.stop()


def print_summary(data_dir: Path, nats_url: str, env: Mapping[str, str]) -> None:
    lines = ["", "Kizuna is up.", f"  nats           {nats_url}"]
    for spec in SERVICES:
        lines.append(f"  {spec.name:<14} 127.0.0.1:{spec.env_port(env)} (gRPC, reflection on)")
    lines += [
        f"  admin token    {data_dir / 'admin.token'}",
        f"  auditor token  {data_dir / 'auditor.token'}",
        "",
        "Try:",
        f'  grpcurl -plaintext -H "authorization: Bearer $(cat {data_dir / "admin.token"})" '
        f"127.0.0.1:{SERVICES[0].env_port(env)} list",
        "Ctrl-C stops everything; data stays in " + str(data_dir),
        "",
    ]
    print("\n".join(lines), flush=True)


def default_data_dir() -> Path:
    return Path(os.environ.get("KIZUNA_DATA_DIR") or ".kizuna")
