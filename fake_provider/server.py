"""Serving the fake provider with uvicorn on a socket bound up front (so the URL is known before
the server starts and no other process can take the port). Used by `__main__` and `testing`.
"""

from __future__ import annotations

import socket

import uvicorn

from fake_provider.app import FakeProvider, create_app


def bind_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    # IPPROTO_TCP, not 0: asyncio turns Nagle off (TCP_NODELAY) only on connections accepted
    # from a socket made with it; without, each answer after its headers waits for the
    # client's delayed ACK (about 40 ms).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    return sock


def make_server(provider: FakeProvider, *, log_level: str = "warning") -> uvicorn.Server:
    config = uvicorn.Config(
        create_app(provider=provider),
        lifespan="off",
        log_level=log_level,
        access_log=log_level in ("debug", "info"),
        # Streams that a test abandoned must not hold shutdown for long.
        timeout_graceful_shutdown=1,
        timeout_keep_alive=30,
    )
    return uvicorn.Server(config)
