"""A harness's listening socket, made the same way by whoever binds it (the harness itself, or
the local backend that hands it over): shared here since neither side may import the other."""

from __future__ import annotations

import socket


def listening_tcp_socket(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """IPPROTO_TCP, so asyncio sets TCP_NODELAY on the connections it accepts; SO_REUSEADDR, so
    connections of a former harness still in TIME_WAIT do not keep the port from it. Raises
    OSError (the socket closed) when the port cannot be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock
