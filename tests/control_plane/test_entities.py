"""Durable entities (`vwm.sdk.entities`) across an orchestrator's crash: a real orchestrator
process (`entity_orchestrator.py`) runs two turns on a session entity and is killed (SIGKILL) at
one step of them; started again with the same store, it finishes. Whatever the step: one
session, each turn's prompt run once, every event seen once and in order, each turn succeeded.
Over real HTTP on the embedded system, with Claude Code and the fake provider."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.control_plane.conftest import ControlPlane
from tests.e2e.conftest import make_bare_repo
from tests.support.control_plane import add_claude_workers
from vwm import Client
from vwm.sdk.entities import VWSessionEntity
from vwm.sdk.entity_store import FINISHED, SqlEntityStore

pytestmark = pytest.mark.cli

ORCHESTRATOR = Path(__file__).with_name("entity_orchestrator.py")
TURNS = ["t1=say hi", "t2=say hi again"]


@pytest.fixture(scope="module")
def plane(tmp_path_factory, fake_provider) -> ControlPlane:
    root = tmp_path_factory.mktemp("entities")
    plane = ControlPlane(root / "data", {"FAKE_PROVIDER_KEY": "test-key"})
    plane.start()
    repo = make_bare_repo(root / "worker.git", {"README.md": "# knowledge\n"})
    with plane.client() as client:
        add_claude_workers(client, fake_provider.base_url, repo)
    yield plane
    plane.stop()


def orchestrate(
    plane: ControlPlane,
    tmp_path: Path,
    name: str,
    kill_at: str | None,
    delivery: str = "at_least_once",
) -> int:
    env = {
        **os.environ,
        "VWM_URL": plane.url,
        "VWM_API_KEY": str(plane.admin_key),
        "DELIVERY": delivery,
    }
    env.pop("KILL_AT", None)
    if kill_at is not None:
        env["KILL_AT"] = kill_at
    store = f"sqlite:///{tmp_path / 'orchestrator.sqlite3'}"
    done = subprocess.run(
        [sys.executable, str(ORCHESTRATOR), store, name, str(tmp_path / "seen.txt"), *TURNS],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode in (0, -signal.SIGKILL), done.stderr
    return done.returncode


def jobs_of(plane: ControlPlane, session_id: str) -> list[dict]:
    with plane.client() as client:
        return client.get(f"/v1/sessions/{session_id}/jobs").json()["items"]


@pytest.mark.parametrize(
    "kill_at",
    [
        "open",
        "session:saving-ready",  # the session made, the store not told yet
        "t1:recorded",
        "t1:saving-sent",  # the prompt taken, the store not told its job yet
        "t1:sent",
        "t1:before-event-1",
        "t1:before-event-3",
        "t1:streamed",
        "t2:sent",
        "t2:before-event-2",
    ],
)
def test_an_orchestrator_killed_at_any_step_runs_each_turn_once(
    plane: ControlPlane, tmp_path: Path, kill_at: str
) -> None:
    name = f"entity-{kill_at.replace(':', '-')}"
    assert orchestrate(plane, tmp_path, name, kill_at) == -signal.SIGKILL
    assert orchestrate(plane, tmp_path, name, None) == 0

    seen = (tmp_path / "seen.txt").read_text().splitlines()
    for turn in ("t1", "t2"):
        seqs = [int(line.split()[2]) for line in seen if line.startswith(f"event {turn} ")]
        assert seqs == list(range(1, len(seqs) + 1)), seen  # each once, in order, no gap
        kinds = [line.split()[3] for line in seen if line.startswith(f"event {turn} ")]
        assert kinds[0] == "job_started" and kinds[-1] == "job_finished", seen
        assert f"result {turn} succeeded" in seen

    store = SqlEntityStore(f"sqlite:///{tmp_path / 'orchestrator.sqlite3'}")
    session_id = store.load_session(name).session_id  # type: ignore[union-attr]
    assert session_id is not None
    jobs = jobs_of(plane, session_id)
    assert sorted(job["prompt"] for job in jobs) == ["say hi", "say hi again"]  # each ran once
    assert {job["status"] for job in jobs} == {"succeeded"}
    assert [t.status for t in store.turns(name)] == [FINISHED, FINISHED]
    with plane.client() as client:
        keyed = [
            s
            for s in client.get("/v1/sessions", params={"worker": "w"}).json()["items"]
            if s["idempotency_key"] == f"vwm-entity:{name}"
        ]
    assert [s["id"] for s in keyed] == [session_id]  # one session, however often opened


def test_a_kill_while_handling_an_event_hands_that_event_over_again(
    plane: ControlPlane, tmp_path: Path
) -> None:
    """At least once across a kill: the event being handled when the process died had not
    counted as seen yet. Only that one comes twice."""
    name = "entity-mid-handling"
    assert orchestrate(plane, tmp_path, name, "t1:after-event-2") == -signal.SIGKILL
    assert orchestrate(plane, tmp_path, name, None) == 0
    seen = [line for line in (tmp_path / "seen.txt").read_text().splitlines()]
    counts = Counter(line for line in seen if line.startswith("event "))
    assert [line for line, n in counts.items() if n > 1] == [
        next(line for line in seen if line.startswith("event t1 2 "))
    ]


def test_at_most_once_a_kill_while_handling_an_event_does_not_hand_it_over_again(
    plane: ControlPlane, tmp_path: Path
) -> None:
    """The same kill as above with ``delivery="at_most_once"``: no event comes twice; the one
    being handled when the process died (event 2) was handed over once, and the rest follow."""
    name = "entity-at-most-once"
    args = (plane, tmp_path, name)
    assert orchestrate(*args, "t1:after-event-2", delivery="at_most_once") == -signal.SIGKILL
    assert orchestrate(*args, None, delivery="at_most_once") == 0
    seen = (tmp_path / "seen.txt").read_text().splitlines()
    events = [line for line in seen if line.startswith("event ")]
    assert len(events) == len(set(events)), seen  # none twice
    for turn in ("t1", "t2"):
        seqs = [int(line.split()[2]) for line in events if line.startswith(f"event {turn} ")]
        assert seqs == list(range(1, len(seqs) + 1)), seen  # and none lost but by the kill
        assert f"result {turn} succeeded" in seen


def test_an_unknown_delivery_is_refused_before_anything_is_sent(plane: ControlPlane) -> None:
    client = Client(plane.url, str(plane.admin_key))
    store = SqlEntityStore("sqlite://")
    entity = VWSessionEntity(client, store, "entity-bad-delivery", worker="w")
    turn = entity.turn("t1", "say hi")
    with pytest.raises(ValueError, match="at_least_once, at_most_once"):
        next(turn.events(delivery="twice"))  # type: ignore[arg-type]
    assert turn.record.job_id is None  # nothing was sent


def test_a_finished_turn_answers_without_running_again_and_streams_async(
    plane: ControlPlane, tmp_path: Path
) -> None:
    store = SqlEntityStore.sqlite(tmp_path / "state.sqlite3")
    with Client(plane.url, str(plane.admin_key)) as client:
        entity = VWSessionEntity(client, store, "entity-async", worker="w")

        async def follow() -> list[int]:
            return [event.seq async for event in entity.turn("a1", "say hi").stream()]

        import asyncio

        seqs = asyncio.run(follow())
        assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) >= 3
        first = entity.turn("a1", "say hi").result()
        again = VWSessionEntity(client, store, "entity-async", worker="w").turn("a1", "say hi")
        assert again.result() == first and first.ok
        assert list(again.events()) == []  # nothing left to see
        assert len(jobs_of(plane, str(entity.session_id))) == 1

        with pytest.raises(Exception, match="another prompt"):
            entity.turn("a1", "something else")
        with pytest.raises(Exception, match="belongs to worker"):
            VWSessionEntity(client, store, "entity-async", worker="v").open()
