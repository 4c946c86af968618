"""Ephemeral TCP port allocation for test servers."""

from __future__ import annotations

import socket

__all__ = ["free_port"]


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago.

    The kernel picks it (bind to port 0), so concurrent test runs do not
    collide the way hard-coded ports would. There is an unavoidable window
    between closing this socket and the server binding it; callers that need
    the port to stay stable across restarts must remember the number.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
