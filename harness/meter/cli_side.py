"""The meter's side facing the CLI: an HTTP/1.1 server on a loopback port, in the harness's
event loop.

A protocol on the C parser (`httptools`) rather than an ASGI server: a request is parsed in the
socket's callback and handed to the proxy whole (the proxy needs the whole body anyway: the
model and the key are in it); the answer is written to the socket as each chunk comes from the
provider, with no ASGI message or task in between (see `provider_side` for why that matters).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Protocol, cast
from urllib.parse import unquote_to_bytes

import httptools

from harness.errors import HarnessError
from harness.meter.wire import MAX_REQUEST_BYTES

logger = logging.getLogger(__name__)

# A kept-alive connection with no request for this long is closed (Node's clients close theirs
# after 4 s, so this is for clients that never do).
IDLE_CLOSE_S = 60.0

# Per hop (RFC 9110 7.6.1): never passed from the provider's answer to the CLI. Its framing
# (content-length, transfer-encoding) is passed on, since its body is, byte for byte.
_RESPONSE_DROPPED = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"upgrade", b"proxy-authenticate"}
)
_NO_BODY_STATUS = frozenset({204, 304})


class _TooLarge(HarnessError):
    """Raised from the parser's body callback to stop reading a request over the limit."""

    status = 413
    code = "payload_too_large"


@dataclass(frozen=True)
class CliRequest:
    method: str
    path: str
    """Percent-decoded, without the query: what tells the API and the vendor."""
    target: bytes
    """The request target as the CLI sent it (path and query), forwarded with the query swapped."""
    query: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes


class Flow(Protocol):
    """What feeds the answer being written: held back while the CLI reads slower than it."""

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...


Handler = Callable[[CliRequest, "CliConnection"], Awaitable[None]]


class CliConnection(asyncio.Protocol):
    def __init__(self, handler: Handler, connections: set[CliConnection]) -> None:
        self._handler = handler
        self._connections = connections
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._queue: deque[CliRequest] = deque()
        self._serving: asyncio.Task[None] | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        # The request being parsed.
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._body_size = 0
        # The answer being written.
        self._close_after = False
        self._answering_head = False
        self._head = b""
        self.flow: Flow | None = None
        self.gone = False
        self.on_gone: Callable[[], None] | None = None

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's are not subclasses of asyncio's).
        self._transport = cast(asyncio.Transport, transport)
        self._connections.add(self)
        self._arm_idle_timer()

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(400, b"upgrades are not served here")
        except Exception as exc:  # the parser's errors, and what its callbacks raised
            if self._body_size >= MAX_REQUEST_BYTES:
                self._refuse(413, b"request too large")
            else:
                self._refuse(400, f"not HTTP/1.1: {exc}".encode())

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone = True
        self._connections.discard(self)
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        on_gone, self.on_gone = self.on_gone, None
        if on_gone is not None:
            on_gone()

    def pause_writing(self) -> None:
        if self.flow is not None:
            self.flow.pause_reading()

    def resume_writing(self) -> None:
        if self.flow is not None:
            self.flow.resume_reading()

    # -- httptools callbacks

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._body = []
        self._body_size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        # The whole body is read before anything is forwarded: a client waiting to be told
        # to go on (curl does, for a large body) is told at once.
        for name, value in self._headers:
            if name.lower() == b"expect" and value.lower() == b"100-continue":
                self._write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size >= MAX_REQUEST_BYTES:
            raise _TooLarge("request too large")
        self._body.append(body)

    def on_message_complete(self) -> None:
        url = httptools.parse_url(self._url)
        path = url.path or b"/"
        query = url.query or b""
        target = path + (b"?" + query if url.query is not None else b"")
        request = CliRequest(
            method=self._parser.get_method().decode("ascii", "replace"),
            path=unquote_to_bytes(path).decode("utf-8", "replace"),
            target=target,
            query=query,
            headers=[(name.lower(), value) for name, value in self._headers],
            body=b"".join(self._body),
        )
        self._body = []
        if not self._parser.should_keep_alive():
            self._close_after = True
        self._queue.append(request)
        if self._serving is None:
            if self._idle_timer is not None:
                self._idle_timer.cancel()
            self._serving = asyncio.get_running_loop().create_task(self._serve())

    async def _serve(self) -> None:
        try:
            while self._queue and not self.gone:
                request = self._queue.popleft()
                self._answering_head = request.method == "HEAD"
                try:
                    await self._handler(request, self)
                except Exception:
                    logger.exception("the meter failed on a request")
                    self._close_after = True
                    if not self.gone and self._transport is not None:
                        self._transport.close()
                self.flow = None
                self.on_gone = None
                if self._close_after and self._transport is not None:
                    self._transport.close()
                    return
        finally:
            self._serving = None
            self._arm_idle_timer()

    def _arm_idle_timer(self) -> None:
        if self.gone or self._transport is None:
            return
        transport = self._transport
        self._idle_timer = asyncio.get_running_loop().call_later(IDLE_CLOSE_S, transport.close)

    # -- answering

    def answer(self, status: int, body: bytes) -> None:
        """A whole JSON answer of the meter's own."""
        self._write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n%s"
            % (
                status,
                _reason(status),
                len(body),
                b"connection: close\r\n" if self._close_after else b"",
                body,
            )
        )

    def start(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        """The head of a provider's answer. Its body follows as the provider framed it (by
        length or chunked); one that ends with its connection ends this one too."""
        lines = [b"HTTP/1.1 %d %s\r\n" % (status, reason or _reason(status))]
        framed = self._answering_head or status in _NO_BODY_STATUS
        for name, value in headers:
            lowered = name.lower()
            if lowered in _RESPONSE_DROPPED:
                continue
            framed = framed or lowered in (b"content-length", b"transfer-encoding")
            lines.append(b"%s: %s\r\n" % (name, value))
        if not framed:
            self._close_after = True
        if self._close_after:
            lines.append(b"connection: close\r\n")
        lines.append(b"\r\n")
        # Sent with the first body bytes when they came in the same read: one write, one
        # wake-up of the CLI. `write(b"")` sends it alone.
        self._head = b"".join(lines)

    def write(self, data: bytes) -> None:
        """Body bytes as framed on the wire (with the head, when it is not sent yet)."""
        head, self._head = self._head, b""
        if head or data:
            self._write(head + data if head else data)

    def finish(self, data: bytes = b"") -> None:
        """The answer's last bytes (their framing's end included), in one write."""
        self.write(data)

    def cut_off(self) -> None:
        """The provider broke off mid-answer: the CLI must see it was cut, not a short answer."""
        self._close_after = True
        self.close()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self.gone:
            self._transport.write(data)

    def _refuse(self, status: int, message: bytes) -> None:
        self._close_after = True
        if self._serving is None:
            body = b'{"error":{"message":"%s"}}' % message.replace(b'"', b"'")
            self.answer(status, body)
        if self._transport is not None:
            self._transport.close()


def _reason(status: int) -> bytes:
    with contextlib.suppress(ValueError):
        return HTTPStatus(status).phrase.encode()
    return b""


class MeterServer:
    """The meter on a loopback port of its own, in the harness's event loop: only processes on
    this machine (the CLI) reach it, never the network the harness serves."""

    def __init__(self, handler: Handler, host: str = "127.0.0.1") -> None:
        # TCP's protocol number, not 0: asyncio sets TCP_NODELAY only on connections accepted
        # from such a socket. Without it, each chunk after the answer's headers waits for the
        # CLI's delayed ACK (40 ms on Linux) before it leaves (bench/meter_overhead.py).
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.bind((host, 0))
        self._sock.listen(256)
        self.url = f"http://{host}:{self._sock.getsockname()[1]}"
        self._handler = handler
        self._server: asyncio.Server | None = None
        self._connections: set[CliConnection] = set()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: CliConnection(self._handler, self._connections), sock=self._sock
        )

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for connection in list(self._connections):
            connection.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
        self._sock.close()
