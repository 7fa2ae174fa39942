"""`functions.db.group_commit.GroupCommit` on both databases: writes submitted together share
transactions (fewer than the items, each item written once, each submitter its own result), an
item alone is written at once in its own, and a bad item fails only its own submitter."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.orm import Session, sessionmaker

from functions.broker.queue import run_in
from functions.db.engine import transaction
from functions.db.group_commit import GroupCommit, each
from functions.db.models import SystemSetting
from functions.db.repositories import Settings


class Refused(Exception):
    pass


def put(session: Session, item: tuple[str, str]) -> str:
    key, value = item
    if value == "bad":
        raise Refused(key)
    Settings(session).put(key, value)
    return f"{key}={value}"


def stored(factory: sessionmaker[Session], prefix: str) -> dict[str, object]:
    with transaction(factory, read_only=True) as db:
        rows = db.query(SystemSetting).filter(SystemSetting.key.startswith(prefix)).all()
        return {row.key: row.value for row in rows}


async def test_items_submitted_together_share_transactions(factory: sessionmaker[Session]):
    commit = GroupCommit(run_in(factory), each(put))
    items = [(f"gc.many.{n:03}", str(n)) for n in range(60)]
    results = await asyncio.gather(*(commit.submit(item) for item in items))
    assert results == [f"{key}={value}" for key, value in items]  # each its own, in order
    assert stored(factory, "gc.many.") == dict(items)
    assert 1 <= commit.transactions < len(items) // 4


async def test_an_item_alone_is_written_at_once(factory: sessionmaker[Session]):
    commit = GroupCommit(run_in(factory), each(put))
    assert await commit.submit(("gc.alone", "1")) == "gc.alone=1"
    assert stored(factory, "gc.alone") == {"gc.alone": "1"}  # committed when submit returned
    assert await commit.submit(("gc.alone", "2")) == "gc.alone=2"
    assert commit.transactions == 2


async def test_a_bad_item_fails_only_its_submitter(factory: sessionmaker[Session]):
    commit = GroupCommit(run_in(factory), each(put), max_items=10)
    items = [(f"gc.bad.{n:02}", "bad" if n == 7 else str(n)) for n in range(20)]
    results = await asyncio.gather(*(commit.submit(item) for item in items), return_exceptions=True)
    failed = [result for result in results if isinstance(result, Exception)]
    assert len(failed) == 1 and isinstance(failed[0], Refused) and failed[0].args == ("gc.bad.07",)
    assert stored(factory, "gc.bad.") == {key: value for key, value in items if value != "bad"}


def test_a_batch_needs_room_for_an_item():
    with pytest.raises(ValueError, match="at least 1"):
        GroupCommit(run_in(None), each(put), max_items=0)  # type: ignore[arg-type]
