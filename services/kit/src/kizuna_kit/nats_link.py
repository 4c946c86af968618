"""One NATS connection per process that survives outages: the first connect is retried
with back-off, later drops are handled by nats-py's reconnect."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import nats
import structlog
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import NotFoundError

log = structlog.get_logger("kizuna.nats")

DUPLICATE_WINDOW_SECONDS = 120.0


class NatsLink:
    def __init__(self, url: str, name: str, replicas: int = 1) -> None:
        self._url = url
        self._name = name
        # Copies JetStream keeps of the streams and buckets this service creates: 3 on
        # a cluster of 3, so losing or restarting one server stalls nothing.
        self.replicas = replicas
        self._client: Client | None = None
        self._lock = asyncio.Lock()

    async def jetstream(self) -> JetStreamContext:
        """The JetStream context, connecting first if needed (waits while NATS is down)."""
        async with self._lock:
            if self._client is None or self._client.is_closed:
                self._client = await nats.connect(
                    servers=self._url.split(","),
                    name=self._name,
                    connect_timeout=2,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                )
                log.info(
                    "nats.connected",
                    url=self._client.connected_url.netloc if self._client.connected_url else "",
                )
            return self._client.jetstream(timeout=5)

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.is_connected

    async def close(self) -> None:
        if self._client is not None and not self._client.is_closed:
            await self._client.drain()
        self._client = None

    async def _on_error(self, exc: Exception) -> None:
        log.warning("nats.error", error=type(exc).__name__)

    async def _on_disconnected(self) -> None:
        log.warning("nats.disconnected")

    async def _on_reconnected(self) -> None:
        log.info("nats.reconnected")


async def ensure_stream(
    js: JetStreamContext, name: str, subjects: Sequence[str], replicas: int = 1
) -> None:
    """Creates the stream or updates its configuration; safe to call from every replica.
    Never lowers the number of copies an operator raised by hand."""
    try:
        info = await js.stream_info(name)
    except NotFoundError:
        info = None
    current = 0 if info is None else (info.config.num_replicas or 1)
    config = StreamConfig(
        name=name,
        subjects=list(subjects),
        storage=StorageType.FILE,
        duplicate_window=DUPLICATE_WINDOW_SECONDS,
        num_replicas=max(replicas, current),
    )
    if info is None:
        await js.add_stream(config)
    elif sorted(info.config.subjects or []) != sorted(subjects) or replicas > current:
        await js.update_stream(config)
