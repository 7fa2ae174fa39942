"""Engines, sessions and the transaction boundary. The functions' services call `make_engine`
once per process, `session_factory` once per engine, and `transaction` once per unit of work.

PostgreSQL (production) goes through pg8000: its engine, built to spare that pure-Python
driver round trips and new connections, is `functions.db.postgres`.

SQLite (the embedded default) gets three fixes: no schemas (mapped away), foreign keys on, and
real transactions: SQLAlchemy emits `BEGIN IMMEDIATE` itself, so SAVEPOINTs work and a
transaction that reads and then writes cannot fail on a stale snapshot. SQLite runs one writer
at a time, so:

- writers of this process take turns on a lock of their own before `BEGIN IMMEDIATE`: the next
  one starts the moment the last one commits. (Left to SQLite, waiters poll the file lock with
  sleeps of up to 100 ms, and a burst of writes turns into seconds of latency.) Writers in
  other processes (a `vwm` command, a migration) still wait up to `SQLITE_BUSY_TIMEOUT_S`;
- a unit of work that only reads (`transaction(..., read_only=True)`) begins a deferred
  transaction: in WAL mode it reads a snapshot while a writer writes, and waits for nobody.

Keep transactions short and never hold one across a harness call.
"""

from __future__ import annotations

import sqlite3
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, exc, make_url
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, sessionmaker

from functions.db.errors import DbError
from functions.db.models import SCHEMAS
from functions.db.postgres import postgres_engine
from functions.private_files import create_private_file

SCHEMA_TRANSLATE_MAP: dict[str | None, str | None] = dict.fromkeys(SCHEMAS)
SQLITE_BUSY_TIMEOUT_S = 30.0
# The execution option a read-only unit of work sets on its connection before it begins.
READ_ONLY = "vwm_read_only"
# One writer at a time per SQLite database in this process (keyed by engine: each engine is
# one database).
_sqlite_writers: weakref.WeakKeyDictionary[Engine, threading.Lock] = weakref.WeakKeyDictionary()


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
        return postgres_engine(parsed, **kwargs)
    if backend == "sqlite":
        return _sqlite_engine(url, **kwargs)
    raise ValueError(f"unsupported database URL {parsed!r}: use postgresql+pg8000:// or sqlite:///")


def _sqlite_engine(url: str, **kwargs: Any) -> Engine:
    connect_args = {"timeout": SQLITE_BUSY_TIMEOUT_S, **kwargs.pop("connect_args", {})}
    engine = create_engine(url, connect_args=connect_args, **kwargs)
    database = make_url(url).database
    if database and database != ":memory:" and not database.startswith("file:"):
        path = Path(database)
        event.listen(engine, "do_connect", lambda *_: _create_private(path))
    event.listen(engine, "connect", _on_sqlite_connect)
    event.listen(engine, "begin", _on_sqlite_begin)
    mapped = engine.execution_options(schema_translate_map=SCHEMA_TRANSLATE_MAP)
    _sqlite_writers[mapped] = threading.Lock()
    return mapped


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
    read_only = connection.get_execution_options().get(READ_ONLY, False)
    connection.exec_driver_sql("BEGIN DEFERRED" if read_only else "BEGIN IMMEDIATE")


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions whose objects stay readable after commit, so a service can return them."""
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session], *, read_only: bool = False) -> Iterator[Session]:
    """One unit of work: commits when the block ends, rolls back if it raises.

    `read_only`: the block only reads. On SQLite it then neither waits for writers nor holds
    them up; anything it would write is refused (`ReadOnlyTransaction`) rather than written."""
    engine = factory.kw.get("bind")
    writers = _sqlite_writers.get(engine) if engine is not None and not read_only else None
    with _turn(writers), factory() as db, db.begin():
        if read_only:
            db.connection(execution_options={READ_ONLY: True})
            db.info[READ_ONLY] = True
        yield db


@contextmanager
def _turn(writers: threading.Lock | None) -> Iterator[None]:
    """This thread's turn to write, waiting as long as SQLite would have."""
    if writers is None:
        yield
        return
    if not writers.acquire(timeout=SQLITE_BUSY_TIMEOUT_S):
        raise exc.OperationalError(
            "BEGIN IMMEDIATE", None, sqlite3.OperationalError("database is locked")
        )
    try:
        yield
    finally:
        writers.release()


class ReadOnlyTransaction(DbError):
    """A unit of work marked read-only tried to write: a bug in the caller, answered as a 500
    ``internal`` (nothing was written); mark it a writer instead."""


@event.listens_for(Session, "before_flush")
def _refuse_writes_when_read_only(db: Session, *_: object) -> None:
    if db.info.get(READ_ONLY) and (db.new or db.dirty or db.deleted):
        raise ReadOnlyTransaction("a read-only unit of work tried to write; run it as a writer")
