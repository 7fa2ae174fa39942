"""Serve the harness for one session workspace, configured from VWM_* variables: what
`python -m harness` runs (`harness.__main__`), and a warm pool member once claimed
(`harness.pooled`)."""

from __future__ import annotations

import logging
import os
import socket
import sys

import uvicorn
from starlette.types import ASGIApp

from eventing.logs import configure_logging
from eventing.quiet_server import QuietServer
from eventing.sockets import listening_tcp_socket
from eventing.start_gc import CollectAfterFirstAnswer
from eventing.tracing import HARNESS_SERVICE, TracingSettingsError, configure_tracing
from harness.app import create_app
from harness.pool_member import is_pool_member
from harness.settings import HarnessSettings, SettingsError, server_settings

# How long an idle connection stays open: well past how long the control plane's pool keeps one
# (`functions.services`, 4 s). Were they equal (uvicorn's 5 s and httpx's 5 s), a connection
# the pool picks just as the harness closes it fails the call (a reset job stream: ReadError),
# which a saturated machine makes common.
KEEP_ALIVE_S = 15


def serve() -> int:
    configure_logging()
    if is_pool_member(os.environ):
        return _serve_pool_member()
    try:
        settings = HarnessSettings.from_env()
    except SettingsError as exc:
        print(f"harness: {exc}", file=sys.stderr)
        return 2
    try:  # off unless OTEL_TRACES_EXPORTER names an exporter (docs/tracing.md)
        configure_tracing(HARNESS_SERVICE)
    except TracingSettingsError as exc:
        print(f"harness: {exc}", file=sys.stderr)
        return 2
    server = settings.server
    # Bound (or taken over) before the app starts: its lifespan opens the model meter on a port
    # the kernel picks, which could otherwise be this very port, not yet taken by the server.
    try:
        if server.listen_fd is None:
            sock = listening_tcp_socket(server.host, server.port)
        else:
            sock = _inherited(server.listen_fd)
    except OSError as exc:
        where = (
            f"{server.host}:{server.port}"
            if server.listen_fd is None
            else f"the socket VWM_HARNESS_LISTEN_FD={server.listen_fd} names"
        )
        print(f"harness: cannot listen on {where}: {exc}", file=sys.stderr)
        return 3  # what uvicorn exits with when it cannot bind
    print(
        f"harness: {settings.cli.kind} on {_url(sock)}, workspace {settings.workspace}",
        flush=True,
    )
    if server.token_generated:
        # Shown once, on the terminal only: the token is a secret and never goes to the log.
        print(f"harness: session token (generated): {server.session_token}", flush=True)
    # The first answer is the control plane's readiness probe: the start is over by then.
    return _run(CollectAfterFirstAnswer(create_app(settings)), sock)


def _run(app: ASGIApp, sock: socket.socket) -> int:
    config = uvicorn.Config(
        app,
        log_level=logging.getLevelName(logging.getLogger().level).lower(),
        access_log=False,
        timeout_graceful_shutdown=10,
        timeout_keep_alive=KEEP_ALIVE_S,
    )
    QuietServer(config).run(sockets=[sock])
    return 0


def _serve_pool_member() -> int:
    """A warm Knative Service before its session: its imports done now, then the waiting app
    (`harness.pool_member`) until a claim makes it a session's harness."""
    from harness.pool_member import pool_member_app
    from harness.pooled import warm_up

    server = server_settings(os.environ)
    try:
        sock = listening_tcp_socket(server.host, server.port)
    except OSError as exc:
        print(f"harness: cannot listen on {server.host}:{server.port}: {exc}", file=sys.stderr)
        return 3
    warm_up()
    print(f"harness: warm pool member on {_url(sock)}, waiting for a session", flush=True)
    return _run(CollectAfterFirstAnswer(pool_member_app(os.environ)), sock)


def _inherited(fd: int) -> socket.socket:
    """The listening TCP socket the launcher passed as descriptor `fd` (the local backend binds
    the port itself, so nothing can take it before this process starts). A descriptor that is
    not one is left open as it was, and an OSError says what it is instead."""
    sock = socket.socket(fileno=fd)  # OSError if `fd` is not open, or not a socket
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM:
        what = f"{sock.family!s}, {sock.type!s}"
        sock.detach()
        raise OSError(f"descriptor {fd} is a socket ({what}), but not a TCP one")
    if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        sock.detach()
        raise OSError(f"descriptor {fd} is a TCP socket that does not listen")
    # Inherited on purpose, but it goes no further: a CLI holding it could accept the
    # connections meant for the harness.
    sock.set_inheritable(False)
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
