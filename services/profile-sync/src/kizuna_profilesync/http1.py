"""A lean HTTP/1.1 client for webhook POSTs: keep-alive connections per origin, nothing else.

The delivery worker sends one small POST per delivery and needs only the status and a
`retry-after` header back. A general-purpose client spends more CPU per request than
the rest of the pipeline together; this one writes the request in one buffer and reads
the answer with asyncio streams. No redirects are followed (a 3xx is just a status), no
cookies, no proxies. Bodies of answers are read (content-length, chunked, or until the
connection closes) and dropped.

A connection is reused while the server keeps it alive. A reused connection that fails
before any byte of the answer arrived (the server closed it while it was idle) is retried
once on a fresh one: the receiver deduplicates by webhook-id anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_HEAD = 64 * 1024  # status line and headers of an answer
MAX_CONNECTIONS = 64  # per origin
SCHEME_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: Mapping[str, str]  # lower-case names; the last one wins


class HttpError(Exception):
    """The request did not get a complete answer (connection, protocol)."""


class ConnectError(HttpError):
    pass


class ProtocolError(HttpError):
    pass


@dataclass(frozen=True, slots=True)
class _Target:
    origin: tuple[str, str, int]  # scheme, host, port
    host_header: str
    path: bytes


class _Connection:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def usable(self) -> bool:
        return not self.writer.is_closing() and not self.reader.at_eof()

    def close(self) -> None:
        self.writer.close()


class Http1Client:
    def __init__(self, timeout: float, max_connections: int = MAX_CONNECTIONS) -> None:
        self._timeout = timeout
        self._max_connections = max_connections
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._slots: dict[tuple[str, str, int], asyncio.Semaphore] = {}
        self._targets: dict[str, _Target] = {}
        self._ssl: ssl.SSLContext | None = None

    async def __aenter__(self) -> Http1Client:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                connection.close()

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Response:
        """POSTs `body`; raises TimeoutError after the client's timeout, HttpError or
        OSError when no complete answer came."""
        target = self._target(url)
        head = [
            b"POST ",
            target.path,
            b" HTTP/1.1\r\nhost: ",
            target.host_header.encode("ascii"),
            b"\r\ncontent-length: ",
            str(len(body)).encode("ascii"),
        ]
        for name, value in headers.items():
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
                raise ProtocolError("a header carries a line break")
            head += (b"\r\n", name.encode("latin-1"), b": ", value.encode("latin-1"))
        head.append(b"\r\n\r\n")
        request = b"".join(head) + body
        slots = self._slots.get(target.origin)
        if slots is None:
            slots = self._slots[target.origin] = asyncio.Semaphore(self._max_connections)
        async with slots, asyncio.timeout(self._timeout):
            connection = self._take_idle(target.origin)
            if connection is not None:
                try:
                    return await self._exchange(target, connection, request)
                except _StaleConnection:
                    pass  # closed by the server while idle: once more, fresh
            connection = await self._connect(target)
            try:
                return await self._exchange(target, connection, request)
            except _StaleConnection as exc:
                raise ProtocolError("the server closed the connection without answering") from (
                    exc.__cause__
                )

    def _target(self, url: str) -> _Target:
        target = self._targets.get(url)
        if target is None:
            parts = urlsplit(url)
            scheme = parts.scheme.lower()
            if scheme not in SCHEME_PORTS or not parts.hostname:
                raise ProtocolError(f"not an http(s) URL: {url!r}")
            port = parts.port or SCHEME_PORTS[scheme]
            host = parts.hostname
            shown = f"[{host}]" if ":" in host else host
            host_header = shown if parts.port is None else f"{shown}:{port}"
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            if any(c.isspace() or ord(c) < 32 or ord(c) > 126 for c in path):
                raise ProtocolError("the URL path needs encoding")
            target = _Target((scheme, host, port), host_header, path.encode("ascii"))
            self._targets[url] = target
        return target

    def _take_idle(self, origin: tuple[str, str, int]) -> _Connection | None:
        idle = self._idle.get(origin)
        while idle:
            connection = idle.pop()
            if connection.usable():
                return connection
            connection.close()
        return None

    async def _connect(self, target: _Target) -> _Connection:
        scheme, host, port = target.origin
        context: ssl.SSLContext | None = None
        if scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        try:
            reader, writer = await asyncio.open_connection(
                host, port, ssl=context, limit=MAX_HEAD, server_hostname=host if context else None
            )
        except OSError as exc:
            raise ConnectError(str(exc)) from exc
        return _Connection(reader, writer)

    async def _exchange(self, target: _Target, connection: _Connection, request: bytes) -> Response:
        reader, writer = connection.reader, connection.writer
        answered = False
        try:
            writer.write(request)
            await writer.drain()
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError as exc:
                    if not exc.partial and not answered:
                        raise _StaleConnection from exc
                    raise ProtocolError("the answer ended early") from exc
                answered = True
                version, status, headers = _parse_head(head)
                if 100 <= status < 200 and status != 101:
                    continue  # an interim answer (100 Continue): the real one follows
                break
            keep_alive = await _read_body(reader, version, status, headers)
        except _StaleConnection:
            connection.close()
            raise
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            connection.close()
            if not answered and isinstance(exc, ConnectionResetError | BrokenPipeError):
                raise _StaleConnection from exc
            raise ProtocolError(type(exc).__name__) from exc
        except BaseException:
            connection.close()  # a timeout or cancellation mid-answer: unusable
            raise
        if keep_alive and connection.usable():
            self._idle.setdefault(target.origin, []).append(connection)
        else:
            connection.close()
        return Response(status, headers)


class _StaleConnection(Exception):
    pass


def _parse_head(head: bytes) -> tuple[str, int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
        raise ProtocolError("not an HTTP/1.x answer")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return version, int(code), headers


async def _read_body(
    reader: asyncio.StreamReader, version: str, status: int, headers: Mapping[str, str]
) -> bool:
    """Reads the answer's body away; True when the connection may carry another request."""
    connection = headers.get("connection", "").lower()
    keep_alive = connection != "close" and (version != "HTTP/1.0" or "keep-alive" in connection)
    if status in (204, 304):
        return keep_alive
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            size_line = await reader.readuntil(b"\r\n")
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise ProtocolError("a bad chunk size") from None
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass  # trailers
                return keep_alive
            await reader.readexactly(size + 2)
    length = headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise ProtocolError("a bad content-length")
        remaining = int(length)
        while remaining:
            chunk = await reader.read(min(remaining, 65536))
            if not chunk:
                raise asyncio.IncompleteReadError(b"", remaining)
            remaining -= len(chunk)
        return keep_alive
    # Neither: the body runs until the server closes the connection.
    with contextlib.suppress(ConnectionError):
        while await reader.read(65536):
            pass
    return False
