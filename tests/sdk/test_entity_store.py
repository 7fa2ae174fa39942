"""The durable entities' store (`vwm.sdk.entity_store`): records read back as saved, from
another connection (another process would use one), on a SQLite file and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from tests.support.postgres import postgres_database
from vwm.sdk.entity_store import (
    FINISHED,
    SENT,
    EntityStore,
    SessionRecord,
    SqlEntityStore,
    TurnRecord,
)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'entities.sqlite3'}"
    else:
        with postgres_database("vwm_entities") as url:
            yield url


def test_records_read_back_as_saved_from_a_new_store(store_url: str) -> None:
    store = SqlEntityStore(store_url)
    assert store.load_session("s") is None and store.load_turn("t1") is None
    store.save_session(SessionRecord("s", "w"))
    store.save_session(SessionRecord("s", "w", session_id="abc", status="ready"))
    for turn_id in ("t2", "t1", "t3"):  # saved in this order, listed in it
        store.save_turn(TurnRecord(turn_id, "s", f"prompt {turn_id} ✓"))
    store.save_turn(TurnRecord("other", "s2", "elsewhere"))
    done = TurnRecord("t1", "s", "prompt t1 ✓", job_id="j1", last_event_id=7, status=FINISHED)
    store.save_turn(replace(done, result={"id": "j1", "status": "succeeded", "n": [1, 2]}))
    store.save_turn(TurnRecord("t2", "s", "prompt t2 ✓", job_id="j2", status=SENT))
    store.close()

    again: EntityStore = SqlEntityStore(store_url)  # the tables exist: made once, found after
    assert again.load_session("s") == SessionRecord("s", "w", "abc", "ready")
    assert again.load_turn("t1") == replace(
        done, result={"id": "j1", "status": "succeeded", "n": [1, 2]}
    )
    assert [t.turn_id for t in again.turns("s")] == ["t2", "t1", "t3"]
    assert again.turns("s")[0] == TurnRecord("t2", "s", "prompt t2 ✓", "j2", 0, SENT)
    assert [t.turn_id for t in again.turns("s2")] == ["other"]
    assert again.turns("nobody") == []


def test_the_sqlite_shortcut_makes_its_file(tmp_path: Path) -> None:
    path = tmp_path / "orchestrator" / "state.sqlite3"
    path.parent.mkdir()
    SqlEntityStore.sqlite(path).save_session(SessionRecord("s", "w"))
    assert path.is_file()
    assert SqlEntityStore.sqlite(path).load_session("s") == SessionRecord("s", "w")
