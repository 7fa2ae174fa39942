"""The embedded control plane (`python -m functions.embedded`) on a database of a chosen backend
(a fresh PostgreSQL database, or its default SQLite file), with a way to write rows into that
database directly (telemetry a job would have left, say)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from functions.db.engine import make_engine, session_factory, transaction
from tests.support.control_plane import ControlPlane, kill_harnesses
from tests.support.postgres import postgres_database


@dataclass
class PlaneWithDatabase:
    plane: ControlPlane
    database_url: str
    run: Callable[..., Any]
    """`run(fn, *args)`: `fn(session, *args)` in a transaction of its own on the plane's
    database; returns what `fn` returns."""


@contextlib.contextmanager
def control_plane_on(
    backend: str, data_dir: Path, env: dict[str, str] | None = None, *, prefix: str = "vwm_plane"
) -> Iterator[PlaneWithDatabase]:
    """The control plane as a child process on `backend` ("postgresql": a new database, skipped
    without a server; "sqlite": the file in `data_dir`, as `vwm up` keeps it)."""
    with contextlib.ExitStack() as stack:
        if backend == "postgresql":
            url = stack.enter_context(postgres_database(prefix))
            env = {**(env or {}), "VWM_DATABASE_URL": url}
        else:
            url = f"sqlite:///{data_dir / 'vwm.sqlite3'}"
        plane = ControlPlane(data_dir, env or {})
        plane.start()
        stack.callback(kill_harnesses, data_dir)
        stack.callback(plane.stop)
        engine = make_engine(url)
        stack.callback(engine.dispose)
        factory = session_factory(engine)

        def run(fn: Callable[..., Any], *args: Any) -> Any:
            session: Session
            with transaction(factory) as session:
                return fn(session, *args)

        yield PlaneWithDatabase(plane, url, run)
