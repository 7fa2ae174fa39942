"""`python -m harness`: serve the harness for one session workspace, configured from VWM_* variables."""

from __future__ import annotations

import logging
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
    uvicorn.run(
        create_app(settings),
        host=server.host,
        port=server.port,
        log_level=logging.getLevelName(logging.getLogger().level).lower(),
        access_log=False,
        timeout_graceful_shutdown=10,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
