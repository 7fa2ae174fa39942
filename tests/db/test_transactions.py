"""The unit-of-work boundary under concurrency: read-only units run beside a writer (SQLite in WAL
mode reads a snapshot), writes in a read-only unit are refused, and writers of one process take
turns without SQLite's busy polling, losing no write."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from functions.db.engine import ReadOnlyTransaction, transaction
from functions.db.models import SystemSetting
from functions.db.repositories import Settings


def _setting(factory: sessionmaker[Session], key: str) -> object:
    with transaction(factory, read_only=True) as db:
        row = db.get(SystemSetting, key)
        return row.value if row is not None else None


def test_a_read_only_unit_reads_while_a_writer_holds_its_transaction(
    factory: sessionmaker[Session],
) -> None:
    with transaction(factory) as db:
        Settings(db).put("txn.before", "old")
    writing = threading.Event()
    release = threading.Event()

    def writer() -> None:
        with transaction(factory) as db:
            Settings(db).put("txn.before", "new")
            db.flush()
            writing.set()
            release.wait(10)

    with ThreadPoolExecutor(max_workers=1) as pool:
        done = pool.submit(writer)
        assert writing.wait(10)
        started = time.monotonic()
        seen = _setting(factory, "txn.before")  # would wait for the writer were it a writer
        waited = time.monotonic() - started
        release.set()
        done.result(10)
    assert seen == "old", "a reader sees the last committed state, not a write in flight"
    assert waited < 5, f"the reader waited {waited:.1f}s for the writer"
    assert _setting(factory, "txn.before") == "new"


def test_a_read_only_unit_that_writes_is_refused_and_writes_nothing(
    factory: sessionmaker[Session],
) -> None:
    refused = pytest.raises(ReadOnlyTransaction, match="run it as a writer")
    with refused, transaction(factory, read_only=True) as db:
        Settings(db).put("txn.refused", "x")
        db.flush()
    assert _setting(factory, "txn.refused") is None


def test_concurrent_writers_take_turns_and_lose_nothing(factory: sessionmaker[Session]) -> None:
    """Forty threads each read-modify-write one counter; a lost update would show as a total
    below forty (or a `database is locked` error on SQLite)."""
    with transaction(factory) as db:
        Settings(db).put("txn.counter", 0)

    def bump(_: int) -> None:
        with transaction(factory) as db:
            row = db.scalar(
                select(SystemSetting).where(SystemSetting.key == "txn.counter").with_for_update()
            )
            assert row is not None
            value = int(row.value)  # type: ignore[call-overload]
            time.sleep(0.001)  # widen the window a lost update needs
            Settings(db).put("txn.counter", value + 1)

    with ThreadPoolExecutor(max_workers=40) as pool:
        list(pool.map(bump, range(40)))
    assert _setting(factory, "txn.counter") == 40
