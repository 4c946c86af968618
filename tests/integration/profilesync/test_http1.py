"""The delivery worker's HTTP/1.1 client against real sockets: keep-alive reuse, servers
that close, chunked and HTTP/1.0 answers, a connection closed while idle, timeouts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from kizuna_profilesync.http1 import ConnectError, Http1Client

pytestmark = pytest.mark.integration

Answer = Callable[[int, bytes], Awaitable[bytes | None]]  # request number, head -> reply


class Server:
    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.requests: list[tuple[bytes, bytes]] = []  # (head, body)
        self.connections = 0
        self.port = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await reader.readexactly(length)
                self.requests.append((head, body))
                reply = await self.answer(len(self.requests), head)
                if reply is None:
                    break  # hang up without answering
                writer.write(reply)
                await writer.drain()
                if b"connection: close" in reply.lower() or reply.startswith(b"HTTP/1.0"):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Answer], Awaitable[Server]]]:
    servers: list[asyncio.Server] = []

    async def start(answer: Answer) -> Server:
        server = Server(answer)
        listening = await asyncio.start_server(server.serve, "127.0.0.1", 0)
        server.port = listening.sockets[0].getsockname()[1]
        servers.append(listening)
        return server

    yield start
    for listening in servers:
        listening.close()


OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


async def test_keep_alive_reuses_one_connection(
    serve: Callable[[Answer], Awaitable[Server]],
) -> None:
    async def answer(_n: int, _head: bytes) -> bytes:
        return OK

    server = await serve(answer)
    async with Http1Client(timeout=5) as http:
        for i in range(3):
            response = await http.post(
                f"http://127.0.0.1:{server.port}/hook?x=1",
                f"body-{i}".encode(),
                {"webhook-id": f"m{i}"},
            )
            assert response.status == 200
    assert server.connections == 1
    head, body = server.requests[2]
    assert head.startswith(b"POST /hook?x=1 HTTP/1.1\r\n")
    assert f"host: 127.0.0.1:{server.port}\r\n".encode() in head
    assert b"webhook-id: m2\r\n" in head
    assert body == b"body-2"


async def test_answers_of_every_framing_and_their_headers(
    serve: Callable[[Answer], Awaitable[Server]],
) -> None:
    replies = [
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 503 Busy\r\nRetry-After: 7\r\n"
        b"transfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.0 410 Gone\r\ncontent-length: 0\r\n\r\n",  # 1.0: the server hangs up
        b"HTTP/1.1 301 Moved\r\nlocation: /elsewhere\r\nconnection: close\r\n\r\n",
        OK,
    ]

    async def answer(n: int, _head: bytes) -> bytes:
        return replies[n - 1]

    server = await serve(answer)
    url = f"http://127.0.0.1:{server.port}/"
    async with Http1Client(timeout=5) as http:
        statuses = []
        for _ in replies:
            response = await http.post(url, b"{}", {})
            statuses.append(response.status)
            if response.status == 503:
                assert response.headers["retry-after"] == "7"
    assert statuses == [503, 204, 410, 301, 200]  # redirects are not followed
    assert server.connections == 3  # a new one after each server that hung up


async def test_a_connection_closed_while_idle_is_replaced(
    serve: Callable[[Answer], Awaitable[Server]],
) -> None:
    async def answer(n: int, _head: bytes) -> bytes | None:
        return None if n == 2 else OK  # the second request meets a hang-up

    server = await serve(answer)
    url = f"http://127.0.0.1:{server.port}/"
    async with Http1Client(timeout=5) as http:
        assert (await http.post(url, b"1", {})).status == 200
        assert (await http.post(url, b"2", {})).status == 200  # sent again, fresh
    assert [body for _, body in server.requests] == [b"1", b"2", b"2"]


async def test_timeouts_and_refused_connections_raise(
    serve: Callable[[Answer], Awaitable[Server]],
) -> None:
    async def never(_n: int, _head: bytes) -> bytes:
        await asyncio.Event().wait()  # never answers
        return OK

    server = await serve(never)
    async with Http1Client(timeout=0.2) as http:
        with pytest.raises(TimeoutError):
            await http.post(f"http://127.0.0.1:{server.port}/", b"", {})
        listening = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = listening.sockets[0].getsockname()[1]
        listening.close()
        await listening.wait_closed()
        with pytest.raises(ConnectError):
            await http.post(f"http://127.0.0.1:{port}/", b"", {})
