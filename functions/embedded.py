"""All four functions in one process: the control plane of `vwm up`.

On start it migrates the database and finds the sessions that were live when the previous
process stopped, relaunching their harnesses on the same workspaces (the next prompt resumes the
same CLI session). Harnesses are separate processes and outlive this one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from importlib import import_module
from pathlib import Path

from sqlalchemy.orm import Session
from starlette.applications import Starlette

from functions.api import build_app
from functions.context import backend, db, lookup_key
from functions.main import FUNCTIONS

logger = logging.getLogger(__name__)


def create_app() -> Starlette:
    endpoints = [e for name in FUNCTIONS for e in import_module(f"functions.{name}").ENDPOINTS]

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        recovery = asyncio.create_task(recover_sessions())
        yield
        recovery.cancel()

    return build_app(endpoints, lookup_key, title="VWM", lifespan=lifespan)


async def recover_sessions() -> None:
    from functions.runtime.base import RuntimeHandle
    from functions.session_runtime import load, relaunch

    def live(session: Session) -> list[str]:
        from functions.db.models import SessionStatus
        from functions.db.repositories import Sessions

        return [row.id for row in Sessions(session).live() if row.status == SessionStatus.READY]

    for session_id in await db(live):
        try:
            view = await db(load, session_id)
            handle = RuntimeHandle.from_dict(view.session.runtime_state)
            if await backend().status(handle) == "running":
                continue
            await relaunch(view, handle)
            logger.info("session harness relaunched", extra={"session_id": session_id})
        except Exception:  # one broken session must not stop the others
            logger.exception("could not relaunch a session", extra={"session_id": session_id})


def prepare(database_url: str) -> str | None:
    """Migrate the database; issue the first admin key if there is none and return it (once)."""
    from functions.db.api_keys import ApiKeys
    from functions.db.engine import make_engine, session_factory, transaction
    from functions.db.migrate import upgrade

    logging.getLogger("alembic").setLevel(logging.WARNING)  # its INFO lines are set-up noise
    if database_url.startswith("sqlite:///"):
        Path(database_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    upgrade(database_url)
    engine = make_engine(database_url)
    try:
        with transaction(session_factory(engine)) as session:
            keys = ApiKeys(session)
            if keys.has_admin():
                return None
            _, plaintext = keys.issue("first admin key (vwm up)", "admin")
            return plaintext
    finally:
        engine.dispose()


def serve(host: str, port: int, *, announce: bool = True) -> None:
    """Run the embedded control plane until interrupted (`vwm up`)."""
    import uvicorn

    from functions.context import settings

    current = settings()
    current.data_dir.mkdir(parents=True, exist_ok=True)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per harness call
    first_key = prepare(current.database_url)
    if announce:
        print(
            f"vwm: control plane on http://{host}:{port} (data in {current.data_dir})", flush=True
        )
        if first_key:
            # Shown once: only its hash is stored.
            print(f"vwm: first admin API key (shown once): {first_key}", flush=True)
    uvicorn.run(create_app(), host=host, port=port, access_log=False, log_level="warning")


def main(argv: list[str] | None = None) -> None:
    import argparse

    from eventing.logs import configure_logging

    configure_logging()
    parser = argparse.ArgumentParser(prog="python -m functions.embedded", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    serve(args.host, args.port)


if __name__ == "__main__":
    main()
