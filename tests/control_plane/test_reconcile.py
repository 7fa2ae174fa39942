"""The reconciler on `vwm up`, ticking every second: idle and max-age cleanup end the right
sessions and only those, and processes that no session owns are stopped."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.control_plane.conftest import ControlPlane, kill_harnesses
from tests.e2e.conftest import make_bare_repo
from tests.support.control_plane import add_claude_workers

pytestmark = pytest.mark.cli

TICKING = {"VWM_TICK_S": "1", "VWM_RECONCILE_GRACE_S": "1"}


@pytest.fixture
def plane(tmp_path: Path, fake_provider) -> Iterator[ControlPlane]:
    key = f"reconcile-{uuid.uuid4().hex[:8]}"
    plane = ControlPlane(tmp_path / "data", {"FAKE_PROVIDER_KEY": key, **TICKING})
    plane.start()
    yield plane
    plane.stop()
    kill_harnesses(plane.data_dir)


def until(check: Callable[[], Any], what: str, plane: ControlPlane, within: float = 60) -> Any:
    deadline = time.monotonic() + within
    while not (result := check()):
        assert time.monotonic() < deadline, f"{what} within {within} s\n{plane.log()[-4000:]}"
        time.sleep(0.2)
    return result


def workers(plane: ControlPlane, fake_provider, tmp_path: Path, **timeouts: dict) -> None:
    repo = make_bare_repo(tmp_path / "worker.git", {"README.md": "# knowledge\n"})
    with plane.client() as client:
        add_claude_workers(client, fake_provider.base_url, repo, timeouts)


def status(plane: ControlPlane, session_id: str) -> str:
    with plane.client() as client:
        return client.get(f"/v1/sessions/{session_id}").json()["status"]


def test_idle_and_old_sessions_are_ended_and_only_those(plane, fake_provider, tmp_path) -> None:
    workers(
        plane,
        fake_provider,
        tmp_path,
        idle={"idle_s": 2},
        old={"max_age_s": 6},
        forever={},
    )
    with plane.client() as client:

        def start(worker: str) -> str:
            created = client.post("/v1/sessions", json={"worker": worker})
            assert created.status_code == 201, created.text
            return created.json()["id"]

        # `busy` is never idle while its job runs (8 s, past its idle_s); `old` gets a prompt
        # and still ends once it is past its age.
        busy = start("idle")
        job = client.post(
            "/v1/prompts", json={"session_id": busy, "prompt": "sleep 8", "mode": "async"}
        ).json()
        idle, old, forever = start("idle"), start("old"), start("forever")
        until(lambda: status(plane, idle) == "ended", "the idle session ends", plane, 30)
        assert status(plane, busy) == "ready"
        assert status(plane, forever) == "ready"
        with plane.client() as client2:
            prompt = {"session_id": old, "prompt": "say hi"}
            assert client2.post("/v1/prompts", json=prompt).json()["status"] == "succeeded"
        until(lambda: status(plane, old) == "ended", "the old session ends", plane, 30)
        finished = until(
            lambda: (
                (row := client.get(f"/v1/jobs/{job['id']}").json())["status"] == "succeeded" and row
            ),
            "the busy session's job ends",
            plane,
        )
        assert finished["status"] == "succeeded"  # it was not cut off by a cleanup
        until(lambda: status(plane, busy) == "ended", "the busy session ends once idle", plane)
        ended = client.get(f"/v1/sessions/{idle}").json()
        assert ended["result"]["repos"], ended  # ended as DELETE ends it: its work saved
    time.sleep(3)  # several ticks more
    assert status(plane, forever) == "ready"
    # Each change was told as it committed, through the control plane's outbox and the broker.
    ended = "dev.vwm.session.ended"
    assert [e["data"]["reason"] for e in session_events(plane, idle) if e["type"] == ended] == [
        "idle"
    ]
    assert [e["data"]["reason"] for e in session_events(plane, old) if e["type"] == ended] == [
        "max_age"
    ]
    assert [e["type"] for e in session_events(plane, forever)] == [
        "dev.vwm.session.created",
        "dev.vwm.session.ready",
    ]


def session_events(plane: ControlPlane, session_id: str) -> list[dict[str, Any]]:
    """The control plane's events about a session that reached the embedded broker, in order."""
    with sqlite3.connect(plane.data_dir / "vwm.sqlite3") as db:
        bodies = [
            json.loads(row[0]) for row in db.execute("SELECT body FROM broker_events ORDER BY seq")
        ]
    return [
        body
        for body in bodies
        if body.get("sessionid") == session_id and body["type"].startswith("dev.vwm.session.")
    ]


def test_worker_timeouts_are_validated(plane) -> None:
    with plane.client() as client:
        for bad in ({"max_age_s": 0}, {"max_age_s": -1}, {"idle_s": "soon"}, {"ttl": 5}):
            answer = client.post(
                "/v1/admin/workers",
                json={"name": "w", "runtime": "nope", "repo_url": "/x", "timeouts": bad},
            )
            assert answer.status_code == 422, (bad, answer.text)


def test_processes_no_session_owns_are_stopped(plane) -> None:
    stray = plane.data_dir / "sessions" / "not-a-session" / "workspace"
    stray.mkdir(parents=True)
    env = {**os.environ, "VWM_WORKSPACE": str(stray)}
    child = subprocess.Popen(["sleep", "300"], env=env, start_new_session=True)
    try:
        until(lambda: child.poll() is not None, "the stray process is stopped", plane, 30)
        assert child.returncode == -signal.SIGKILL
        assert stray.is_dir()  # its folder is left alone
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_handled_event_ids_are_forgotten_after_their_retention(plane) -> None:
    """`vwm.processed_events` does not grow forever: a tick deletes ids past the retention
    (7 days by default) and keeps the others."""
    database = plane.data_dir / "vwm.sqlite3"
    old = (datetime.now(UTC) - timedelta(days=8)).isoformat()
    recent = (datetime.now(UTC) - timedelta(days=6)).isoformat()
    with sqlite3.connect(database) as db:
        db.executemany(
            "INSERT INTO processed_events (source, id, type, processed_at) VALUES (?, ?, ?, ?)",
            [("/s", "old", "dev.vwm.tick", old), ("/s", "recent", "dev.vwm.tick", recent)],
        )

    def ids() -> list[str]:
        with sqlite3.connect(database) as db:
            return [row[0] for row in db.execute("SELECT id FROM processed_events")]

    until(lambda: ids() == ["recent"], "the old id is forgotten", plane, 30)
