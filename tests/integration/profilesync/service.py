"""A profile-sync service running in the test's event loop, and a real webhook receiver."""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc

from kizuna.profilesync.v1.profilesync_pb2_grpc import ProfileSyncServiceStub
from kizuna_kit.cancellation import cancel_and_wait
from kizuna_kit.config import ServiceConfig
from kizuna_profilesync.domain.webhooks import verify
from kizuna_profilesync.main import ProfileSyncService, build
from kizuna_profilesync.secret_box import write_new_key
from tests.conftest import Keys
from tests.support import Caller

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


class ProfileSync(Caller):
    service: ProfileSyncService

    def __init__(
        self, service: ProfileSyncService, stub: ProfileSyncServiceStub, keys: Keys
    ) -> None:
        store = service.store
        super().__init__(stub, keys, lambda: store.last_seq())
        self.service = service


@asynccontextmanager
async def running_profilesync(
    data_dir: Path,
    keys: Keys,
    database_url: str | None,
    nats_url: str | None,
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[ProfileSync]:
    """With `nats_url`, the consumers run; the delivery worker always runs."""
    data_dir.mkdir(parents=True, exist_ok=True)
    key_file = data_dir / "secrets.key"
    if not key_file.exists():
        write_new_key(key_file)
    config = ServiceConfig(
        service="profilesync",
        host="127.0.0.1",
        port=0,
        metrics_port=0,
        nats_url=nats_url or "nats://127.0.0.1:1",
        database_url=database_url,
        data_dir=data_dir,
        api_keys_file=keys.path,
        log_level="warning",
        log_format="json",
        shutdown_grace_seconds=0.5,
        workers=8,
    )
    settings = {
        "KIZUNA_PROFILESYNC_SECRETS_KEY_FILE": str(key_file),
        "KIZUNA_PROFILESYNC_RETRY_BASE_SECONDS": "0.01",
        "KIZUNA_PROFILESYNC_RETRY_MAX_SECONDS": "0.2",
        "KIZUNA_PROFILESYNC_MAX_ATTEMPTS": "60",
        "KIZUNA_PROFILESYNC_WEBHOOK_TIMEOUT_SECONDS": "0.5",
        "KIZUNA_PROFILESYNC_EXPORT_INTERVAL_SECONDS": "0",
        **(env or {}),
    }
    service = build(config, settings)
    await service.server.start()
    jobs = [service.deliverer.run] + ([c.run for c in service.consumers] if nats_url else [])
    tasks = [asyncio.create_task(job()) for job in jobs]
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{service.server.port}")
    try:
        yield ProfileSync(service, ProfileSyncServiceStub(channel), keys)
    finally:
        await cancel_and_wait(tasks)
        await channel.close()
        await service.server.stop(0)
        await service.close()


@dataclass
class Receiver:
    """An HTTP receiver that checks signatures, dedupes by webhook-id, and misbehaves."""

    failure_rate: float = 0.0
    stall_rate: float = 0.0
    stall_seconds: float = 0.0
    status_override: int | None = None
    seen: set[str] = field(default_factory=set)
    duplicates: int = 0
    bad_signatures: int = 0
    out_of_order: int = 0
    attempts: int = 0
    state: dict[str, dict[str, Any]] = field(default_factory=dict)
    last_position: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    applied: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    port: int = 0

    def handle(self, headers: Mapping[str, str], body: bytes) -> int:
        with self.lock:
            self.attempts += 1
            if self.status_override is not None:
                return self.status_override
            roll = self.rng.random()
        if roll < self.stall_rate:
            time.sleep(self.stall_seconds)  # past the sender's timeout
            return 200
        if roll < self.stall_rate + self.failure_rate:
            return 503
        msg_id = headers.get("webhook-id", "")
        try:
            verify(
                SECRET,
                msg_id,
                headers.get("webhook-timestamp", ""),
                body,
                headers.get("webhook-signature", ""),
                now=datetime.now(UTC),
            )
        except Exception:
            with self.lock:
                self.bad_signatures += 1
            return 401
        event = json.loads(body)
        with self.lock:
            if msg_id in self.seen:
                self.duplicates += 1
                return 200
            self.seen.add(msg_id)
            customer = event["customer_id"]
            if event["position"] < self.last_position[customer]:
                self.out_of_order += 1
            self.last_position[customer] = event["position"]
            self.applied.append(event)
            if event["type"] == "customer.deleted":
                self.state.pop(customer, None)
            else:
                self.state[customer] = event["data"]
        return 200


@asynccontextmanager
async def running_receiver(receiver: Receiver) -> AsyncIterator[Receiver]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            status = receiver.handle({k.lower(): v for k, v in self.headers.items()}, body)
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
