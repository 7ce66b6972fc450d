"""Servers for tests that need a peer which is there but never answers."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def silent_server(backlog: int = 64) -> Iterator[str]:
    """``host:port`` of a socket that accepts connections and never answers (a service or a Redis
    too busy to reply); closed afterwards."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(backlog)
    try:
        yield f"127.0.0.1:{server.getsockname()[1]}"
    finally:
        server.close()
