"""A bare TCP server for tests that need a peer misbehaving at the HTTP level (accepts and stays
silent, answers headers then stalls, trickles): each connection is handed to a handler in a
thread. Real sockets, no HTTP library in the way."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

Handler = Callable[[socket.socket, bytearray], None]


@dataclass
class RawServer:
    port: int
    received: list[bytearray] = field(default_factory=list)  # per connection, what it read

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.contextmanager
def raw_server(handler: Handler) -> Iterator[RawServer]:
    """Serve on a free loopback port; `handler(conn, buffer)` gets each connection once its
    request head has arrived (`buffer` holds what was read, and is kept in `received`)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)  # so the accept loop sees `stop`
    server = RawServer(listener.getsockname()[1])
    stop = threading.Event()
    conns: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            conns.append(conn)
            buffer = bytearray()
            server.received.append(buffer)
            threading.Thread(target=_handle, args=(conn, buffer, handler), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        stop.set()
        thread.join(5)
        listener.close()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()


def _handle(conn: socket.socket, buffer: bytearray, handler: Handler) -> None:
    with contextlib.suppress(OSError):
        while b"\r\n\r\n" not in buffer:
            chunk = conn.recv(65536)
            if not chunk:
                return
            buffer += chunk
        handler(conn, buffer)


def silent(conn: socket.socket, buffer: bytearray) -> None:
    """Read everything the client sends, never answer (a harness whose event loop is stuck)."""
    while chunk := conn.recv(65536):
        buffer += chunk
