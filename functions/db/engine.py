"""Engines, sessions and the transaction boundary. The functions' services call `make_engine`
once per process, `session_factory` once per engine, and `transaction` once per unit of work.

PostgreSQL (production) goes through pg8000. SQLite (the embedded default) gets three fixes:
no schemas (mapped away), foreign keys on, and real transactions: SQLAlchemy emits
`BEGIN IMMEDIATE` itself, so SAVEPOINTs work and a transaction that reads and then writes cannot
fail on a stale snapshot. The price is that SQLite runs one transaction at a time (others wait up
to `SQLITE_BUSY_TIMEOUT_S`): keep transactions short and never hold one across a harness call.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, exc, make_url
from sqlalchemy.engine import Connection, ExceptionContext
from sqlalchemy.orm import Session, sessionmaker

from functions.db.models import SCHEMAS
from functions.private_files import create_private_file

SCHEMA_TRANSLATE_MAP: dict[str | None, str | None] = dict.fromkeys(SCHEMAS)
SQLITE_BUSY_TIMEOUT_S = 30.0


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for `postgresql+pg8000://...` or `sqlite:///path`.

    A bare `postgresql://` URL gets the pg8000 driver. Extra keyword arguments go to
    `create_engine` (e.g. `pool_size`, `echo`).
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+pg8000")
        # Pooled connections go stale while a scale-to-zero function sleeps.
        engine = create_engine(parsed, pool_pre_ping=True, **kwargs)
        event.listen(engine, "handle_error", _integrity_errors_as_such)
        return engine
    if backend == "sqlite":
        return _sqlite_engine(url, **kwargs)
    raise ValueError(f"unsupported database URL {parsed!r}: use postgresql+pg8000:// or sqlite:///")


def _integrity_errors_as_such(context: ExceptionContext) -> BaseException | None:
    """pg8000 raises IntegrityError only for unique violations; CHECK, FOREIGN KEY and NOT NULL
    violations (SQLSTATE class 23) arrive as ProgrammingError. Make them all IntegrityError, as
    they are on SQLite, so callers handle one exception on both backends."""
    if isinstance(context.sqlalchemy_exception, exc.IntegrityError):
        return None
    original = context.original_exception
    detail = original.args[0] if original.args else None
    if isinstance(detail, dict) and str(detail.get("C", "")).startswith("23"):
        return exc.IntegrityError(context.statement, context.parameters, original)
    return None


def _sqlite_engine(url: str, **kwargs: Any) -> Engine:
    connect_args = {"timeout": SQLITE_BUSY_TIMEOUT_S, **kwargs.pop("connect_args", {})}
    engine = create_engine(url, connect_args=connect_args, **kwargs)
    database = make_url(url).database
    if database and database != ":memory:" and not database.startswith("file:"):
        path = Path(database)
        event.listen(engine, "do_connect", lambda *_: _create_private(path))
    event.listen(engine, "connect", _on_sqlite_connect)
    event.listen(engine, "begin", _on_sqlite_begin)
    return engine.execution_options(schema_translate_map=SCHEMA_TRANSLATE_MAP)


def _create_private(path: Path) -> None:
    """Create the database file 0600 before SQLite creates it with the umask's mode (0644): it
    holds API key hashes and everything about the sessions. SQLite gives its -wal and -shm files
    the database file's mode."""
    if path.parent.is_dir():
        create_private_file(path)


def _on_sqlite_connect(dbapi_connection: sqlite3.Connection, _record: object) -> None:
    # Take BEGIN away from the sqlite3 module (its legacy mode skips it for SELECT, DDL and
    # SAVEPOINT); `_on_sqlite_begin` emits it instead.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")  # durable enough with WAL, much faster
    finally:
        cursor.close()


def _on_sqlite_begin(connection: Connection) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions whose objects stay readable after commit, so a service can return them."""
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commits when the block ends, rolls back if it raises."""
    with factory() as db, db.begin():
        yield db
