"""`python -m harness`: serve the harness for one session workspace, configured from VWM_* variables."""

from __future__ import annotations

import logging
import socket
import sys

import uvicorn

from eventing.logs import configure_logging
from harness.app import create_app
from harness.settings import HarnessSettings, SettingsError


def main() -> int:
    configure_logging()
    try:
        settings = HarnessSettings.from_env()
    except SettingsError as exc:
        print(f"harness: {exc}", file=sys.stderr)
        return 2
    server = settings.server
    print(
        f"harness: {settings.cli.kind} on http://{server.host}:{server.port}, "
        f"workspace {settings.workspace}",
        flush=True,
    )
    if server.token_generated:
        # Shown once, on the terminal only: the token is a secret and never goes to the log.
        print(f"harness: session token (generated): {server.session_token}", flush=True)
    # Bound before the app starts: its lifespan opens the model meter on a port the kernel
    # picks, which could otherwise be this very port, not yet taken by the server.
    try:
        sock = _listen(server.host, server.port)
    except OSError as exc:
        print(f"harness: cannot listen on {server.host}:{server.port}: {exc}", file=sys.stderr)
        return 3  # what uvicorn exits with when it cannot bind
    config = uvicorn.Config(
        create_app(settings),
        log_level=logging.getLevelName(logging.getLogger().level).lower(),
        access_log=False,
        timeout_graceful_shutdown=10,
    )
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP: asyncio sets TCP_NODELAY only on connections accepted from such a socket.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


if __name__ == "__main__":
    sys.exit(main())
