"""The embedded control plane (`python -m functions.embedded`) on a fresh PostgreSQL database,
with a way to write rows into that database directly (telemetry a job would have left, say)."""

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
class PlaneOnPostgres:
    plane: ControlPlane
    database_url: str
    run: Callable[..., Any]
    """`run(fn, *args)`: `fn(session, *args)` in a transaction of its own on the plane's
    database; returns what `fn` returns."""


@contextlib.contextmanager
def control_plane_on_postgres(
    data_dir: Path, env: dict[str, str] | None = None, *, prefix: str = "vwm_plane"
) -> Iterator[PlaneOnPostgres]:
    """The control plane as a child process on a new database (skips without PostgreSQL)."""
    with postgres_database(prefix) as url:
        plane = ControlPlane(data_dir, {**(env or {}), "VWM_DATABASE_URL": url})
        plane.start()
        engine = make_engine(url)
        factory = session_factory(engine)

        def run(fn: Callable[..., Any], *args: Any) -> Any:
            session: Session
            with transaction(factory) as session:
                return fn(session, *args)

        try:
            yield PlaneOnPostgres(plane, url, run)
        finally:
            engine.dispose()
            plane.stop()
            kill_harnesses(data_dir)
