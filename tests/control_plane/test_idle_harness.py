"""Idle harnesses scale to zero on the embedded default (`VWM_HARNESS_IDLE_S`): over real HTTP,
with real harnesses, claude and the fake provider. A ready session idle past the setting keeps
its workspace and its status but loses its process; the next prompt, a files call or the
session's end brings it back on the same workspace. A session running a job is never stopped,
however long the job."""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.control_plane.conftest import ControlPlane, harness_pids, kill_harnesses
from tests.control_plane.test_reconcile import until
from tests.e2e.conftest import make_bare_repo
from tests.support.control_plane import add_claude_workers

pytestmark = pytest.mark.cli

IDLE_S = 3
SETTINGS = {"VWM_TICK_S": "1", "VWM_RECONCILE_GRACE_S": "1", "VWM_HARNESS_IDLE_S": str(IDLE_S)}


@pytest.fixture
def plane(tmp_path: Path, fake_provider) -> Iterator[ControlPlane]:
    key = f"idle-{uuid.uuid4().hex[:8]}"
    plane = ControlPlane(tmp_path / "data", {"FAKE_PROVIDER_KEY": key, **SETTINGS})
    plane.start()
    repo = make_bare_repo(tmp_path / "worker.git", {"README.md": "# knowledge\n"})
    with plane.client() as client:
        add_claude_workers(client, fake_provider.base_url, repo)
    yield plane
    plane.stop()
    kill_harnesses(plane.data_dir)


def handle(plane: ControlPlane, session_id: str) -> dict[str, Any]:
    with sqlite3.connect(plane.data_dir / "vwm.sqlite3") as db:
        (raw,) = db.execute(
            "SELECT runtime_state FROM sessions WHERE id = ?", (session_id,)
        ).fetchone()
    return json.loads(raw)["state"]


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"


def idled(plane: ControlPlane, session_id: str) -> bool:
    state = handle(plane, session_id)
    return bool(state.get("idle_stopped")) and not alive(state["pid"])


def start(client, worker: str = "w") -> str:
    created = client.post("/v1/sessions", json={"worker": worker})
    assert created.status_code == 201, created.text
    return created.json()["id"]


def prompt(client, session_id: str, text: str) -> dict[str, Any]:
    job = client.post("/v1/prompts", json={"session_id": session_id, "prompt": text}).json()
    assert job["status"] == "succeeded", job
    return job


def an_idle_session(plane: ControlPlane, client) -> str:
    """A session that ran one prompt and whose harness has since stopped for being idle."""
    session_id = start(client)
    prompt(client, session_id, "say hi")
    until(lambda: idled(plane, session_id), "the harness stops", plane)
    return session_id


def test_an_idle_harness_stops_and_the_next_prompt_brings_it_back(plane) -> None:
    with plane.client() as client:
        idle, busy = start(client), start(client)
        first = prompt(client, idle, "say hi")
        long_job = client.post(
            "/v1/prompts", json={"session_id": busy, "prompt": "sleep 8", "mode": "async"}
        ).json()
        before = handle(plane, idle)
        until(lambda: idled(plane, idle), "the idle session's harness stops", plane)
        assert client.get(f"/v1/sessions/{idle}").json()["status"] == "ready"
        assert Path(before["workspace"], "worker_repo", "README.md").is_file()
        # The busy one runs its job past the idle setting: never stopped while it runs.
        assert not handle(plane, busy).get("idle_stopped")
        assert client.get(f"/v1/jobs/{long_job['id']}").json()["status"] == "running"
        [busy_pid] = harness_pids(plane.data_dir)
        assert busy_pid == handle(plane, busy)["pid"]

        again = prompt(client, idle, "say hi")
        after = handle(plane, idle)
        assert "idle_stopped" not in after and alive(after["pid"]) and after["pid"] != before["pid"]
        jobs = client.get(f"/v1/sessions/{idle}/jobs").json()["items"]
        assert {job["id"] for job in jobs} == {first["id"], again["id"]}

        finished = until(
            lambda: (
                (row := client.get(f"/v1/jobs/{long_job['id']}").json())["status"]
                in ("succeeded", "failed")
                and row
            ),
            "the long job ends",
            plane,
        )
        assert finished["status"] == "succeeded", finished  # not cut off by an idle stop
        until(lambda: idled(plane, busy), "the busy session's harness stops once idle", plane)
        # Both idle now: no process at all (a CLI would be found too: it runs in the workspace).
        until(lambda: idled(plane, idle), "the woken session's harness stops again", plane)
        assert harness_pids(plane.data_dir) == []


def test_files_and_the_end_wake_an_idle_harness(plane) -> None:
    with plane.client() as client:
        session_id = an_idle_session(plane, client)
        listing = client.get(f"/v1/sessions/{session_id}/files", params={"path": "worker_repo"})
        assert listing.status_code == 200, listing.text
        assert "README.md" in json.dumps(listing.json())
        woken = handle(plane, session_id)
        assert alive(woken["pid"]) and not woken.get("idle_stopped")
        # Up for a files call, it gets the whole idle time again before it stops.
        time.sleep(IDLE_S - 1)
        assert alive(woken["pid"])
        until(lambda: idled(plane, session_id), "the woken harness stops again", plane)

        ended = client.delete(f"/v1/sessions/{session_id}")
        assert ended.status_code == 200, ended.text
        assert ended.json()["status"] == "ended", ended.json()
        assert ended.json()["result"]["repos"], ended.json()  # its work saved, as any end
        assert harness_pids(plane.data_dir) == []


def test_a_restart_leaves_an_idle_harness_down_until_a_prompt_needs_it(plane) -> None:
    with plane.client() as client:
        session_id = an_idle_session(plane, client)
    plane.stop()  # vwm up restarts: it relaunches the harnesses of ready sessions, not this one
    plane.start()
    with plane.client() as client:
        assert client.get(f"/v1/sessions/{session_id}").json()["status"] == "ready"
        assert idled(plane, session_id) and harness_pids(plane.data_dir) == []
        prompt(client, session_id, "say hi")
    assert not handle(plane, session_id).get("idle_stopped")
