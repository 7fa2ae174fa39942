"""Fixtures for the data layer's tests, each run on both backends: a real PostgreSQL (a fresh,
uniquely named database per test session, dropped at the end; `VWM_TEST_PG_URL` points at the
server) and an SQLite file. Tests use `transaction(factory)` exactly as services do."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Engine, create_engine, delete, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from functions.db.engine import make_engine, session_factory
from functions.db.migrate import upgrade
from functions.db.models import Base

PG_SERVER_URL = os.environ.get(
    "VWM_TEST_PG_URL", "postgresql+pg8000://postgres@127.0.0.1:5432/postgres"
)
BACKENDS = ["postgresql", "sqlite"]

NewDatabase = Callable[[str], str]


def _pg_server() -> Engine:
    """An AUTOCOMMIT engine on the server's maintenance database, for CREATE/DROP DATABASE."""
    engine = create_engine(PG_SERVER_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect():
            pass
    except OperationalError as error:
        engine.dispose()
        pytest.skip(
            f"PostgreSQL is not reachable at {PG_SERVER_URL} ({error.orig}); start it with "
            "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` "
            "or point VWM_TEST_PG_URL at a server"
        )
    return engine


@pytest.fixture(scope="session")
def new_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NewDatabase]:
    """Make an empty database on a backend and return its URL; all are dropped at the end."""
    server: Engine | None = None
    created: list[str] = []

    def make(backend: str) -> str:
        nonlocal server
        name = f"vwm_test_{uuid.uuid4().hex[:12]}"
        if backend == "sqlite":
            return f"sqlite:///{tmp_path_factory.mktemp('db') / f'{name}.db'}"
        server = server or _pg_server()
        with server.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        created.append(name)
        return make_url(PG_SERVER_URL).set(database=name).render_as_string(hide_password=False)

    yield make
    if server is not None:
        with server.connect() as connection:
            for name in created:
                connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        server.dispose()


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="session")
def migrated_url(backend: str, new_database: NewDatabase) -> str:
    """A database migrated to head once per backend, shared by every test that uses `factory`
    (each test leaves it empty)."""
    url = new_database(backend)
    upgrade(url)
    return url


@pytest.fixture(scope="session")
def engine(migrated_url: str) -> Iterator[Engine]:
    engine = make_engine(migrated_url)
    yield engine
    engine.dispose()


@pytest.fixture
def factory(engine: Engine) -> Iterator[sessionmaker[Session]]:
    """A session factory on the shared migrated database, emptied after each test."""
    yield session_factory(engine)
    with engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            connection.execute(delete(table))
