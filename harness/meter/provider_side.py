"""The meter's leg to the model provider: HTTP/1.1 over kept-alive connections, the answer handed
to a `Relay` from the socket's own callbacks.

Each read of an answer goes from `data_received` to the relay, which writes it to the CLI at
once, as it came (framing and all): no task wakes up per chunk, no buffering, no re-framing by a
client library's layers. The C parser (`httptools`, llhttp: the parser uvicorn and Node use)
reads it only for the head and the end. That is the meter's hot path; an HTTP client library
here (httpx, as before) cost two to four times as much per call (bench/meter_overhead.py).

What a provider connection must do and does: TLS with the trust store httpx would use (certifi,
or `SSL_CERT_FILE`/`SSL_CERT_DIR`), the proxy from the harness's environment (`HTTPS_PROXY`,
`HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY`; a CONNECT tunnel for TLS), a connect timeout, answers
framed by length, chunked or ended by the connection's close, and keep-alive connections
dropped as soon as the provider closes them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import select
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import unquote, urlsplit

# Undocumented but long-standing: what urllib itself uses to apply NO_PROXY.
from urllib.request import proxy_bypass_environment  # type: ignore[attr-defined]

import certifi
import httptools

from harness.errors import HarnessError
from harness.meter.calls import PROVIDER_UNREACHABLE

# At most this many idle connections are kept per provider; more are closed once their answer
# has ended. A CLI makes a handful of calls at once at most.
MAX_IDLE_PER_PROVIDER = 16
# The blank line that ends a head (llhttp also takes bare LFs).
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")
# A proxy's answer to CONNECT larger than this is no proxy's.
_MAX_CONNECT_ANSWER = 64 * 1024


class ProviderUnreachable(HarnessError):
    """No connection to the provider: refused, DNS, TLS, proxy, or the connect timeout."""

    status = 502
    code = PROVIDER_UNREACHABLE
    retryable = True


class ProviderFailed(HarnessError):
    """The connection broke before the provider's answer began."""

    status = 502
    code = "provider_failed"
    retryable = True


class Relay(Protocol):
    """Where a provider's answer goes, as it arrives: its body as framed on the wire (length,
    chunked, or to the connection's close, as its headers say)."""

    def head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> None: ...
    def body(self, data: bytes) -> None: ...
    def end(self, data: bytes) -> None:
        """The answer's last body bytes (maybe none), and its end."""

    def broken(self, reason: str) -> None: ...


@dataclass(frozen=True)
class Origin:
    """A provider's scheme, host and port, parsed once from its root URL."""

    tls: bool
    host: str
    port: int

    @classmethod
    def of(cls, root: str) -> Origin:
        parts = urlsplit(root)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ProviderUnreachable(f"not an http(s) URL: {root!r}")
        tls = parts.scheme == "https"
        try:
            port = parts.port or (443 if tls else 80)
        except ValueError as exc:
            raise ProviderUnreachable(f"bad port in {root!r}") from exc
        return cls(tls, parts.hostname, port)

    @property
    def authority(self) -> bytes:
        default = 443 if self.tls else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return (host if self.port == default else f"{host}:{self.port}").encode("idna")


@dataclass(frozen=True)
class _Proxy:
    origin: Origin
    authorization: bytes | None  # Proxy-Authorization, from the proxy URL's user:password


def proxies_from(environ: Mapping[str, str]) -> dict[str, str]:
    """The proxy settings in an environment, as urllib names them (`https`, `http`, `all`,
    `no`); the lower-case variable wins, as in curl and httpx."""
    found: dict[str, str] = {}
    for scheme in ("https", "http", "all", "no"):
        value = environ.get(f"{scheme}_proxy") or environ.get(f"{scheme.upper()}_PROXY")
        if value:
            found[scheme] = value.strip()
    return found


def trust_store(environ: Mapping[str, str]) -> ssl.SSLContext:
    """The CAs a provider's certificate must chain to, chosen as httpx, curl and Python's own
    tools choose them: `SSL_CERT_FILE`, else `SSL_CERT_DIR`, else certifi's bundle."""
    cafile, capath = environ.get("SSL_CERT_FILE"), environ.get("SSL_CERT_DIR")
    try:
        if cafile:
            return ssl.create_default_context(cafile=cafile)
        if capath:
            return ssl.create_default_context(capath=capath)
        return ssl.create_default_context(cafile=certifi.where())
    except (OSError, ssl.SSLError) as exc:
        where = f"SSL_CERT_FILE={cafile}" if cafile else f"SSL_CERT_DIR={capath}"
        raise ProviderUnreachable(f"the trust store in {where} cannot be read: {exc}") from exc


class ProviderPool:
    """Kept-alive connections to the providers the meter forwards to."""

    def __init__(self, *, connect_timeout_s: float, environ: Mapping[str, str]) -> None:
        self._connect_timeout_s = connect_timeout_s
        self._proxies = proxies_from(environ)
        self._environ = environ
        self._idle: dict[Origin, list[ProviderConnection]] = {}
        self._busy: set[ProviderConnection] = set()
        self._tls: ssl.SSLContext | None = None

    def _tls_context(self) -> ssl.SSLContext:
        # Built once, at the first TLS connection: loading a trust store takes milliseconds.
        if self._tls is None:
            self._tls = trust_store(self._environ)
        return self._tls

    async def send(
        self,
        origin: Origin,
        method: str,
        target: bytes,
        headers: bytes,
        body: bytes,
        relay: Relay,
    ) -> ProviderConnection:
        """Send a request (`headers`: its header lines, CRLF-ended, no Host or framing) and
        hand its answer to `relay`; returns once the answer has begun (its head is at the
        relay). Raises `ProviderUnreachable` or `ProviderFailed` before anything reached the relay."""
        connection, proxy = await self._connection(origin)
        if proxy is not None and not origin.tls:
            # A plain-HTTP provider through a proxy: the absolute form, to the proxy itself.
            target = b"http://" + origin.authority + target
            if proxy.authorization:
                headers += b"proxy-authorization: " + proxy.authorization + b"\r\n"
        head = b"%s %s HTTP/1.1\r\nhost: %s\r\n%scontent-length: %d\r\n\r\n" % (
            method.encode("ascii"),
            target,
            origin.authority,
            headers,
            len(body),
        )
        self._busy.add(connection)
        # Before the request goes: a short answer can end in the same read as its head.
        connection.on_done = self._returned
        try:
            await connection.exchange(head + body, relay, head_only=method == "HEAD")
        except BaseException:
            connection.on_done = None
            connection.close()
            self._busy.discard(connection)
            raise
        return connection

    def _returned(self, connection: ProviderConnection) -> None:
        self._busy.discard(connection)
        if not connection.reusable:
            connection.close()
            return
        idle = self._idle.setdefault(connection.origin, [])
        if len(idle) >= MAX_IDLE_PER_PROVIDER:
            connection.close()
        else:
            idle.append(connection)

    async def _connection(self, origin: Origin) -> tuple[ProviderConnection, _Proxy | None]:
        proxy = self._proxy_for(origin)
        idle = self._idle.get(origin, [])
        while idle:
            connection = idle.pop()
            if connection.reusable and connection.quiet:
                return connection, proxy
            connection.close()
        try:
            connection = await asyncio.wait_for(
                self._connect(origin, proxy), timeout=self._connect_timeout_s
            )
        except TimeoutError as exc:
            raise ProviderUnreachable(
                f"no connection within {self._connect_timeout_s:g} s"
                + (" (through the proxy)" if proxy else "")
            ) from exc
        except ssl.SSLError as exc:
            raise ProviderUnreachable(f"TLS failed: {exc.reason or exc}") from exc
        except OSError as exc:
            raise ProviderUnreachable(exc.strerror or str(exc) or type(exc).__name__) from exc
        return connection, proxy

    async def _connect(self, origin: Origin, proxy: _Proxy | None) -> ProviderConnection:
        loop = asyncio.get_running_loop()
        tls = self._tls_context() if origin.tls else None
        if proxy is None:
            _, connection = await loop.create_connection(
                lambda: ProviderConnection(origin),
                origin.host,
                origin.port,
                ssl=tls,
                server_hostname=origin.host if tls else None,
            )
            return connection
        proxy_tls = self._tls_context() if proxy.origin.tls else None
        transport, connection = await loop.create_connection(
            lambda: ProviderConnection(origin),
            proxy.origin.host,
            proxy.origin.port,
            ssl=proxy_tls,
            server_hostname=proxy.origin.host if proxy_tls else None,
        )
        if tls is None:
            return connection
        try:
            await connection.tunnel(proxy)
            tunnelled = await loop.start_tls(
                transport, connection, tls, server_hostname=origin.host
            )
        except BaseException:
            transport.close()
            raise
        if tunnelled is None:
            raise ProviderUnreachable("the proxy closed the tunnel")
        connection.transport = tunnelled
        return connection

    def _proxy_for(self, origin: Origin) -> _Proxy | None:
        url = self._proxies.get("https" if origin.tls else "http") or self._proxies.get("all")
        if not url or proxy_bypass_environment(origin.host, self._proxies):
            return None
        if "://" not in url:
            url = "http://" + url
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise ProviderUnreachable(
                f"the proxy {parts.scheme}://{parts.hostname} is not an HTTP proxy; "
                "the meter takes http:// and https:// proxies"
            )
        authorization = None
        if parts.username is not None:
            user = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            authorization = b"Basic " + base64.b64encode(user.encode())
        return _Proxy(
            Origin.of(f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"), authorization
        )

    async def close(self) -> None:
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()
        for connection in list(self._busy):
            connection.close()
        self._busy.clear()


class ProviderConnection(asyncio.Protocol):
    """One connection to a provider, one exchange at a time."""

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self.transport: asyncio.BaseTransport | None = None
        self.on_done: Callable[[ProviderConnection], None] | None = None
        self._relay: Relay | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._began: asyncio.Future[None] | None = None
        self._status_reason = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._framed = False  # the answer says where it ends (length or chunked)
        self._head_only = False
        self._head_bytes = bytearray()  # the answer's bytes until its head is whole
        self._head_end_from = 0  # where to look for the end of the next head in them
        self._body_start: int | None = None  # where the body begins in them, once known
        self._head_unsent = False  # the relay has a head to send with the read's body bytes
        self._ended = False  # the answer has ended: the relay hears of it with its last bytes
        self._interim = False  # a 1xx answer is being parsed; the real one follows
        self._open = True
        self._exchanges = 0
        self._tunnel: asyncio.Future[None] | None = None
        self._tunnel_answer = bytearray()

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self._tunnel is not None:
            self._tunnel_received(data)
            return
        if self._relay is None:  # nothing asked: a provider talking out of turn
            self._open = False
            self.close()
            return
        # The body is passed on as it came, framing and all (the CLI's side keeps the provider's
        # framing): the parser reads it only to find the head and the end, never copying it.
        in_head = self._body_start is None
        if in_head:
            self._head_bytes += data
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(f"the provider's answer is not HTTP/1.1: {exc}")
            return
        if not in_head:
            self._deliver(data)
        elif self._body_start is not None:  # the head ended in this read
            body = bytes(self._head_bytes[self._body_start :])
            self._head_bytes = bytearray()
            self._deliver(body)

    def eof_received(self) -> bool | None:
        return None  # close

    def connection_lost(self, exc: Exception | None) -> None:
        self._open = False
        if self._tunnel is not None and not self._tunnel.done():
            self._tunnel.set_exception(ProviderUnreachable("the proxy closed the connection"))
            return
        if self._relay is None:
            return
        if self._began is not None and not self._began.done():
            self._began.set_exception(
                ProviderFailed(f"the connection closed before an answer ({exc or 'EOF'})")
            )
            self._relay = None
            return
        if self._framed:
            self._fail(f"the answer was cut off ({exc or 'EOF'})")
        else:  # an answer that ends where its connection does
            self._ended = True
            self._deliver(b"")

    def pause_writing(self) -> None:  # requests are written whole; nothing to hold back
        pass

    # -- the exchange

    @property
    def quiet(self) -> bool:
        """Nothing to read on an idle connection, as it should be. A provider that closed it
        while it was idle has sent its FIN, which the event loop may not have seen yet: such a
        connection would take the next request and fail it (what httpcore checks, too)."""
        sock = self.transport.get_extra_info("socket") if self.transport is not None else None
        if sock is None:
            return True
        try:
            readable, _, _ = select.select([sock.fileno()], [], [], 0)
        except (OSError, ValueError):
            return False
        return not readable

    @property
    def reusable(self) -> bool:
        return (
            self._open
            and self._relay is None
            and self.transport is not None
            and not self.transport.is_closing()
        )

    async def exchange(self, request: bytes, relay: Relay, *, head_only: bool) -> None:
        assert self.transport is not None and self._relay is None
        self._relay = relay
        self._head_only = head_only
        self._headers = []
        self._framed = False
        self._ended = False
        self._interim = False
        self._head_bytes = bytearray()
        self._head_end_from = 0
        self._body_start = None
        self._exchanges += 1
        self._began = asyncio.get_running_loop().create_future()
        if self._exchanges > 1:  # a fresh parser per answer: llhttp keeps state after errors
            self._parser = httptools.HttpResponseParser(self)
        self.transport.write(request)  # type: ignore[attr-defined]
        await self._began

    def pause_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()  # type: ignore[attr-defined]

    def resume_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()  # type: ignore[attr-defined]

    def abandon(self) -> None:
        """The CLI left mid-answer: the rest of it goes nowhere, and the connection with it."""
        self._relay = None
        self._open = False
        self.close()
        self._done()

    def close(self) -> None:
        self._open = False
        if self.transport is not None:
            self.transport.close()

    # -- httptools callbacks

    def on_status(self, reason: bytes) -> None:
        self._status_reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        # Where this head ends in the bytes read: the answer's body (or the next head) follows.
        blank = _BLANK_LINE.search(self._head_bytes, self._head_end_from)
        head_end = blank.end() if blank is not None else len(self._head_bytes)
        self._head_end_from = head_end
        if 100 <= status < 200:  # an interim answer (103 Early Hints): the real one follows
            self._headers = []
            self._status_reason = b""
            self._interim = True
            return
        for name, value in self._headers:
            lowered = name.lower()
            if lowered == b"content-length" or (
                lowered == b"transfer-encoding" and b"chunked" in value.lower()
            ):
                self._framed = True
        if self._head_only or status in (204, 304):
            self._framed = True
        assert self._relay is not None and self._began is not None
        self._body_start = head_end
        self._relay.head(status, self._status_reason, self._headers)
        self._head_unsent = True
        self._status_reason = b""
        if not self._began.done():
            self._began.set_result(None)
        if self._head_only:  # llhttp would wait for a body a HEAD answer never has
            self._ended = True

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self._ended = True
        # Asked now: once this callback returns, llhttp has begun on a next message.
        if not self._parser.should_keep_alive():
            self._open = False

    # -- endings

    def _deliver(self, data: bytes) -> None:
        """Hand the relay what this read brought: the head, the body bytes, the end, in one
        call (one write to the CLI)."""
        relay = self._relay
        if relay is None:
            return
        head_unsent, self._head_unsent = self._head_unsent, False
        if not self._ended:
            if data or head_unsent:
                relay.body(data)
            return
        self._relay = None
        relay.end(data)
        self._done()

    def _fail(self, reason: str) -> None:
        relay, self._relay = self._relay, None
        self._open = False
        self.close()
        if self._began is not None and not self._began.done():
            self._began.set_exception(ProviderFailed(reason))
        elif relay is not None:
            relay.broken(reason)
        self._done()

    def _done(self) -> None:
        on_done, self.on_done = self.on_done, None
        if on_done is not None:
            on_done(self)

    # -- a CONNECT tunnel through a proxy

    async def tunnel(self, proxy: _Proxy) -> None:
        assert self.transport is not None
        self._tunnel = asyncio.get_running_loop().create_future()
        authority = b"%s:%d" % (self.origin.host.encode("idna"), self.origin.port)
        request = b"CONNECT %s HTTP/1.1\r\nhost: %s\r\n" % (authority, authority)
        if proxy.authorization:
            request += b"proxy-authorization: " + proxy.authorization + b"\r\n"
        self.transport.write(request + b"\r\n")  # type: ignore[attr-defined]
        try:
            await self._tunnel
        finally:
            self._tunnel = None

    def _tunnel_received(self, data: bytes) -> None:
        assert self._tunnel is not None
        self._tunnel_answer += data
        head, found, _ = bytes(self._tunnel_answer).partition(b"\r\n\r\n")
        if not found:
            if len(self._tunnel_answer) > _MAX_CONNECT_ANSWER:
                self._tunnel.set_exception(ProviderUnreachable("the proxy's answer is too long"))
            return
        status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[1].startswith("2"):
            self._tunnel.set_exception(
                ProviderUnreachable(f"the proxy refused the tunnel: {status_line}")
            )
            return
        with contextlib.suppress(asyncio.InvalidStateError):
            self._tunnel.set_result(None)
