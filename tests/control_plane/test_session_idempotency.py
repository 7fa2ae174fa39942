"""`POST /v1/sessions` with an `idempotency_key`: sent again (a retry after a timeout, a caller
that restarted), it answers the session the first request made, as it is now, and starts no
other. Keys are per worker; the same key naming another session repository is a conflict. Over
real HTTP on the embedded system, with real harnesses."""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.control_plane.conftest import ControlPlane, harness_pids
from tests.e2e.conftest import make_bare_repo
from tests.support.control_plane import add_claude_workers
from vwm import Client

pytestmark = pytest.mark.cli


@pytest.fixture
def plane(control_plane: ControlPlane, fake_provider, tmp_path: Path) -> ControlPlane:
    repo = make_bare_repo(tmp_path / "worker.git", {"README.md": "# knowledge\n"})
    with control_plane.client() as client:
        add_claude_workers(client, fake_provider.base_url, repo, {"w": {}, "v": {}})
    control_plane.task_repo = make_bare_repo(  # type: ignore[attr-defined]
        tmp_path / "task.git", {"main.py": "print('hi')\n"}
    )
    return control_plane


def sessions_of(client, worker: str) -> list[dict]:
    return client.get("/v1/sessions", params={"worker": worker}).json()["items"]


def test_a_create_sent_again_answers_the_first_session_and_starts_no_other(plane) -> None:
    body = {"worker": "w", "idempotency_key": "order-17"}
    with plane.client() as client:
        first = client.post("/v1/sessions", json=body)
        again = client.post("/v1/sessions", json=body)

        assert first.status_code == 201, first.text
        assert again.status_code == 200, again.text
        assert again.json()["id"] == first.json()["id"]
        assert again.json()["status"] == "ready"
        assert again.json()["idempotency_key"] == "order-17"
        assert len(sessions_of(client, "w")) == 1
        assert len(harness_pids(plane.data_dir)) == 1

        # Ended since: the replay still answers it, as it is now, and starts nothing.
        client.delete(f"/v1/sessions/{first.json()['id']}").raise_for_status()
        ended = client.post("/v1/sessions", json=body)
        assert ended.status_code == 200, ended.text
        assert (ended.json()["id"], ended.json()["status"]) == (first.json()["id"], "ended")
        assert len(sessions_of(client, "w")) == 1

        # Without a key, or with another: a new session each time.
        other = client.post("/v1/sessions", json={"worker": "w", "idempotency_key": "order-18"})
        plain = client.post("/v1/sessions", json={"worker": "w"})
        assert other.status_code == plain.status_code == 201
        assert len({first.json()["id"], other.json()["id"], plain.json()["id"]}) == 3


def test_keys_are_per_worker_and_a_key_naming_another_repository_is_a_conflict(plane) -> None:
    repo = {"url": str(plane.task_repo), "branch": "main"}
    with plane.client() as client:
        made = client.post(
            "/v1/sessions", json={"worker": "w", "idempotency_key": "k", "session_repo": repo}
        )
        assert made.status_code == 201, made.text
        for changed in (
            {"url": str(plane.task_repo), "branch": "task-2"},  # another branch
            None,  # none at all
        ):
            body = {"worker": "w", "idempotency_key": "k"}
            if changed is not None:
                body["session_repo"] = changed
            conflict = client.post("/v1/sessions", json=body)
            assert conflict.status_code == 409, conflict.text
            assert conflict.json()["error"]["code"] == "idempotency_key_reused"
            assert conflict.json()["error"]["details"]["session_id"] == made.json()["id"]
        assert len(sessions_of(client, "w")) == 1

        elsewhere = client.post("/v1/sessions", json={"worker": "v", "idempotency_key": "k"})
        assert elsewhere.status_code == 201, elsewhere.text
        assert elsewhere.json()["id"] != made.json()["id"]


def test_the_same_key_at_the_same_moment_makes_one_session(plane) -> None:
    body = {"worker": "w", "idempotency_key": "burst"}

    def create(_: int):
        with plane.client() as client:
            return client.post("/v1/sessions", json=body)

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(create, range(4)))

    assert sorted(a.status_code for a in answers) == [200, 200, 200, 201], [a.text for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1
    assert {a.json()["status"] for a in answers} == {"ready"}  # the replays waited for it
    with plane.client() as client:
        assert len(sessions_of(client, "w")) == 1
    assert len(harness_pids(plane.data_dir)) == 1


def test_a_replay_without_waiting_answers_202_while_the_first_is_still_starting(plane) -> None:
    body = {"worker": "w", "idempotency_key": "later", "wait": False}
    with plane.client() as client:
        first = client.post("/v1/sessions", json=body)
        again = client.post("/v1/sessions", json=body)
        assert first.status_code == 202, first.text
        assert again.json()["id"] == first.json()["id"]
        assert again.status_code in (200, 202)  # 200 once the first has become ready
        deadline = time.monotonic() + 60
        while (now := client.post("/v1/sessions", json=body)).status_code == 202:
            assert time.monotonic() < deadline, now.text
            time.sleep(0.2)
        assert now.status_code == 200 and now.json()["status"] == "ready", now.text


@pytest.mark.parametrize("key", ["", "k" * 201, 17])
def test_a_bad_key_is_refused_before_anything_starts(plane, key) -> None:
    with plane.client() as client:
        refused = client.post("/v1/sessions", json={"worker": "w", "idempotency_key": key})
        assert refused.status_code == 422, refused.text
        assert sessions_of(client, "w") == []


def test_the_sdk_and_the_command_line_send_the_key(plane) -> None:
    assert plane.admin_key is not None
    with Client(plane.url, api_key=plane.admin_key) as client:
        worker = client.worker("w")
        first = worker.session(idempotency_key="sdk-1")
        again = worker.session(idempotency_key="sdk-1")
        assert again.id == first.id and again.status == "ready"

    env = {**os.environ, "VWM_URL": plane.url, "VWM_API_KEY": plane.admin_key}
    command = [sys.executable, "-m", "vwm", "session", "start", "w", "--idempotency-key", "cli-1"]
    ids = [
        subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout.strip()
        for _ in range(2)
    ]
    assert ids[0] == ids[1] != first.id
