"""Two sessions on one repository and branch: the second to end never strands its work.

Real git, real bare repositories; each session is a workspace of its own, bootstrapped and ended
through the same functions the harness's routes call.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from harness.bootstrap import BootstrapRequest, bootstrap
from harness.settings import GitSettings
from harness.transcript import shutdown_repos
from harness.workspace import Workspace

pytestmark = pytest.mark.usefixtures("isolated_git")

LOCAL_GIT = GitSettings(allow_local=True)


@pytest.fixture
def repos(bare_repo_factory) -> dict[str, Path]:
    return {
        "session": bare_repo_factory("task", files={"app.py": "line 1\nline 2\nline 3\n"}),
        "worker": bare_repo_factory("knowledge", files={"notes.md": "# notes\n"}),
    }


@pytest.fixture
def start(tmp_path, repos):
    async def make(session_id: str) -> Workspace:
        ws = Workspace(tmp_path / session_id / "workspace")
        request = BootstrapRequest.model_validate(
            {
                "session_repo": {"url": str(repos["session"])},
                "worker_repo": {"url": str(repos["worker"])},
            }
        )
        await bootstrap(ws, request, "CLAUDE.md", allow_local=True)
        ran_a_job(ws, session_id)
        return ws

    return make


def ran_a_job(ws: Workspace, session_id: str) -> None:
    """A job's event log, so each session writes its transcript (the file both would share)."""
    event = {"job_id": f"job-{session_id}", "seq": 1, "ts": 1.0, "kind": "job_started",
             "data": {"prompt": f"prompt of {session_id}"}}  # fmt: skip
    (ws.jobs_dir / f"job-{session_id}.jsonl").write_text(json.dumps(event) + "\n")


async def end(ws: Workspace, session_id: str) -> dict:
    return await shutdown_repos(ws, git=LOCAL_GIT, session_id=session_id)


def show(git, bare: Path, ref: str, path: str) -> str:
    return git("--git-dir", str(bare), "show", f"{ref}:{path}")


async def test_the_second_session_is_rebased_when_the_work_does_not_conflict(start, repos, git):
    first, second = await start("s-1"), await start("s-2")
    (first.session_repo / "one.py").write_text("one\n")
    (first.worker_repo / "notes.md").write_text("# notes\nlesson one\n")
    (second.session_repo / "two.py").write_text("two\n")
    (second.worker_repo / "more.md").write_text("lesson two\n")

    assert (await end(first, "s-1"))["repos"]["session_repo"]["push"] == "direct"
    outcome = await end(second, "s-2")

    for label, bare in (("session_repo", repos["session"]), ("worker_repo", repos["worker"])):
        saved = outcome["repos"][label]
        assert saved["push"] == "rebased" and saved["branch"] == "main" and saved["error"] is None
        assert git("--git-dir", str(bare), "rev-parse", "main") == saved["head"]
    assert show(git, repos["session"], "main", "one.py") == "one"
    assert show(git, repos["session"], "main", "two.py") == "two"
    for session_id in ("s-1", "s-2"):  # one transcript folder per session: no conflict there
        transcript = show(
            git, repos["session"], "main", f".vwm/sessions/{session_id}/transcript.md"
        )
        assert f"prompt of {session_id}" in transcript
    assert show(git, repos["worker"], "main", "more.md") == "lesson two"
    assert "lesson one" in show(git, repos["worker"], "main", "notes.md")


async def test_conflicting_work_goes_to_a_branch_of_its_own(start, repos, git, tmp_path):
    first, second = await start("s-1"), await start("s-2")
    (first.session_repo / "app.py").write_text("line 1\nFIRST\nline 3\n")
    (second.session_repo / "app.py").write_text("line 1\nSECOND\nline 3\n")
    # A merge driver the repository asks for must not run during the rebase either.
    marker = tmp_path / "PWNED"
    script = tmp_path / "driver.sh"
    script.write_text(f"#!/bin/sh\ntouch {marker}\nexit 0\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    (second.session_repo / ".gitattributes").write_text("* merge=evil\n")
    with (second.session_repo / ".git" / "config").open("a") as config:
        config.write(f'[merge "evil"]\n\tdriver = {script} %O %A %B\n')

    await end(first, "s-1")
    outcome = await end(second, "s-2")

    saved = outcome["repos"]["session_repo"]
    assert saved["push"] == "fallback_branch" and saved["branch"] == "vwm/s-2"
    assert saved["pushed"] is True and saved["error"] is None
    assert show(git, repos["session"], "main", "app.py") == "line 1\nFIRST\nline 3"
    assert show(git, repos["session"], "vwm/s-2", "app.py") == "line 1\nSECOND\nline 3"
    assert git("--git-dir", str(repos["session"]), "rev-parse", "vwm/s-2") == saved["head"]
    assert not marker.exists()
    # The workspace is left on its own branch, not mid-rebase.
    assert not (second.session_repo / ".git" / "rebase-merge").exists()
    assert git("status", "--porcelain", cwd=second.session_repo) == ""


async def test_a_taken_fallback_branch_gets_a_name_of_its_own(start, repos, git):
    first, second = await start("s-1"), await start("s-2")
    (first.session_repo / "app.py").write_text("FIRST\n")
    (second.session_repo / "app.py").write_text("SECOND\n")
    await end(first, "s-1")
    # Someone already holds vwm/s-2 with other history (a session id reused, a hand push).
    git("--git-dir", str(repos["session"]), "branch", "vwm/s-2", "main")

    saved = (await end(second, "s-2"))["repos"]["session_repo"]

    assert saved["push"] == "fallback_branch"
    assert saved["branch"] == f"vwm/s-2-{saved['head'][:12]}"
    assert show(git, repos["session"], saved["branch"], "app.py") == "SECOND"


async def test_ending_again_after_a_fallback_changes_nothing(start, repos, git):
    first, second = await start("s-1"), await start("s-2")
    (first.session_repo / "app.py").write_text("FIRST\n")
    (second.session_repo / "app.py").write_text("SECOND\n")
    await end(first, "s-1")
    saved = (await end(second, "s-2"))["repos"]["session_repo"]
    again = (await end(second, "s-2"))["repos"]["session_repo"]
    assert again["committed"] is None and again["push"] == "fallback_branch"
    assert again["branch"] == saved["branch"] and again["head"] == saved["head"]
