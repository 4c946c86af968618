"""A webhook receiver that answers 200 at once and notes when each webhook-id first arrived
(time.monotonic, in this process: the same clock the sender side of the benchmark reads).

A minimal HTTP/1.1 server on asyncio streams (keep-alive, content-length bodies), in the
benchmark's own event loop, so no thread hand-off sits between arrival and timestamp."""

from __future__ import annotations

import asyncio
import contextlib
import time


class WebhookReceiver:
    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}  # webhook-id -> first arrival
        self.requests = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/webhook"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            # Hang up on the sender's keep-alive connections, so each handler ends on
            # its own instead of being cancelled with the loop.
            for writer in list(self._connections):
                writer.close()
            if self._handlers:
                await asyncio.wait(self._handlers, timeout=2.0)
            await self._server.wait_closed()

    async def wait_for(self, count: int, within: float) -> bool:
        """True once `count` distinct webhooks arrived; False after `within` seconds."""
        deadline = time.monotonic() + within
        while len(self.arrivals) < count:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections.add(writer)
        handler = asyncio.current_task()
        if handler is not None:
            self._handlers.add(handler)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                headers = parse_headers(head)
                length = int(headers.get("content-length", "0"))
                if length:
                    await reader.readexactly(length)
                arrived = time.monotonic()
                self.requests += 1
                self.arrivals.setdefault(headers.get("webhook-id", ""), arrived)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            self._connections.discard(writer)
            self._handlers.discard(handler)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


def parse_headers(head: bytes) -> dict[str, str]:
    lines = head.decode("latin-1").split("\r\n")[1:]  # after the request line
    headers: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return headers
