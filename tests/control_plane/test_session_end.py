"""Ending sessions over real HTTP on the embedded system: two sessions on one repository and
branch, the second to end never strands its work, and each session's `result` says where it went.

No CLI runs here: the work is written through the session files API, as a client would.
"""

from __future__ import annotations

import pytest

from tests.e2e.conftest import git, make_bare_repo
from vwm.local.clis import pinned_version


@pytest.fixture
def client(control_plane, fake_provider):
    with control_plane.client() as client:
        runtime = client.post(
            "/v1/admin/runtimes",
            json={"name": "claude-fake", "cli": "claude", "cli_version": pinned_version("claude"),
                  "provider_base_url": fake_provider.base_url,
                  "credential_ref": "FAKE_PROVIDER_KEY"},
        )  # fmt: skip
        assert runtime.status_code == 201, runtime.text
        yield client


def start(client, worker: str, task_repo) -> str:
    created = client.post(
        "/v1/sessions", json={"worker": worker, "session_repo": {"url": str(task_repo)}}
    )
    assert created.status_code == 201, created.text
    return created.json()["id"]


def write(client, session_id: str, path: str, text: str) -> None:
    done = client.put(
        f"/v1/sessions/{session_id}/files/content", params={"path": path}, content=text.encode()
    )
    assert done.status_code == 200, done.text


def test_two_sessions_on_one_branch_both_keep_their_work(client, tmp_path):
    knowledge = make_bare_repo(tmp_path / "knowledge.git", {"README.md": "# knowledge\n"})
    task = make_bare_repo(tmp_path / "task.git", {"app.py": "one\ntwo\nthree\n"})
    worker = client.post(
        "/v1/admin/workers",
        json={"name": "pair", "runtime": "claude-fake", "repo_url": str(knowledge)},
    )
    assert worker.status_code == 201, worker.text
    first, second, third = (start(client, "pair", task) for _ in range(3))
    write(client, first, "session_repo/app.py", "one\nFIRST\nthree\n")
    write(client, first, "worker_repo/lesson-1.md", "first lesson\n")
    write(client, second, "session_repo/other.py", "print('second')\n")
    write(client, second, "worker_repo/lesson-2.md", "second lesson\n")
    write(client, third, "session_repo/app.py", "one\nTHIRD\nthree\n")

    ended = [client.delete(f"/v1/sessions/{sid}") for sid in (first, second, third)]

    assert [e.status_code for e in ended] == [200, 200, 200], [e.text for e in ended]
    assert [e.json()["status"] for e in ended] == ["ended", "ended", "ended"]
    results = [e.json()["result"]["repos"]["session_repo"] for e in ended]
    assert [r["push"] for r in results] == ["direct", "rebased", "fallback_branch"]
    assert results[2]["branch"] == f"vwm/{third}"
    knowledge_result = ended[1].json()["result"]["repos"]["worker_repo"]
    assert knowledge_result["push"] == "rebased" and knowledge_result["branch"] == "main"
    # Everything is on the remotes: both non-conflicting sessions on main, the third on its own.
    assert git("--git-dir", str(task), "show", "main:app.py") == "one\nFIRST\nthree"
    assert git("--git-dir", str(task), "show", "main:other.py") == "print('second')"
    assert git("--git-dir", str(task), "show", f"vwm/{third}:app.py") == "one\nTHIRD\nthree"
    assert git("--git-dir", str(task), "rev-parse", f"vwm/{third}") == results[2]["head"]
    for name in ("lesson-1.md", "lesson-2.md"):
        assert git("--git-dir", str(knowledge), "cat-file", "-e", f"main:{name}") == ""
    # The result is kept with the session.
    again = client.get(f"/v1/sessions/{third}").json()
    assert again["result"]["repos"]["session_repo"]["branch"] == f"vwm/{third}"


def test_a_session_whose_push_failed_can_be_ended_again(client, tmp_path):
    task = make_bare_repo(tmp_path / "task.git", {"app.py": "v1\n"})
    knowledge = make_bare_repo(tmp_path / "knowledge.git", {"README.md": "# k\n"})
    assert client.post(
        "/v1/admin/workers", json={"name": "solo", "runtime": "claude-fake", "repo_url": str(knowledge)}
    ).status_code == 201  # fmt: skip
    session = start(client, "solo", task)
    write(client, session, "session_repo/app.py", "v2\n")
    hidden = task.rename(tmp_path / "away.git")  # the remote is unreachable at the end

    failed = client.delete(f"/v1/sessions/{session}")

    assert failed.status_code == 502
    body = failed.json()
    assert body["status"] == "failed" and body["error"]["code"] == "push_failed"
    assert body["result"]["repos"]["session_repo"]["pushed"] is False
    hidden.rename(task)  # reachable again: ending once more pushes the kept commit
    ended = client.delete(f"/v1/sessions/{session}")
    assert ended.status_code == 200, ended.text
    assert ended.json()["result"]["repos"]["session_repo"]["push"] == "direct"
    assert git("--git-dir", str(task), "show", "main:app.py") == "v2"
