"""A fresh PostgreSQL database for a test that runs the control plane as a process on it
(`VWM_DATABASE_URL`); dropped afterwards. `VWM_TEST_PG_URL` points at the server."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, make_url
from sqlalchemy.exc import OperationalError

PG_SERVER_URL = os.environ.get(
    "VWM_TEST_PG_URL", "postgresql+pg8000://postgres@127.0.0.1:5432/postgres"
)


@contextlib.contextmanager
def postgres_database(prefix: str = "vwm_test") -> Iterator[str]:
    """The URL of a new, empty database; skips the test if the server is not reachable."""
    server = create_engine(PG_SERVER_URL, isolation_level="AUTOCOMMIT")
    try:
        with server.connect():
            pass
    except OperationalError as error:
        server.dispose()
        pytest.skip(f"PostgreSQL is not reachable at {PG_SERVER_URL} ({error.orig})")
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with server.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(PG_SERVER_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with server.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        server.dispose()
