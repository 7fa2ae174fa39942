"""``POST /v1/learning/commit`` over real HTTP to a real harness process, with real git and local
bare repositories: what a learning job left in worker_repo is committed with its provenance as
trailers and pushed to the worker's branch (direct) or to ``learning/<session id>`` only
(review); nothing to record, a second end, a remote that moved or is gone, a running job, bad
requests and a workspace without a worker repository each get their answer."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from eventing.harness_api import LearningCommitOutcome
from harness.learning import SUMMARY_BYTES
from tests.support.harness_process import HarnessProcess

pytestmark = pytest.mark.usefixtures("isolated_git")

SESSION = "sess-learn-1"
LESSON = "# Lessons\n\nRun `make test` before pushing.\n"


@pytest.fixture
def worker_bare(bare_repo_factory) -> Path:
    return bare_repo_factory("knowledge", files={"knowledge/conventions.md": "use tabs\n"})


@pytest.fixture
def session_bare(bare_repo_factory) -> Path:
    return bare_repo_factory("task", files={"app.py": "print('v1')\n"})


@pytest.fixture
def harness(tmp_path: Path, stand_in: Path) -> Iterator[HarnessProcess]:
    process = HarnessProcess(
        tmp_path / "workspace",
        "claude",
        {"VWM_CLI_BIN": str(stand_in), "VWM_SESSION_ID": SESSION},
        tmp_path / "harness.log",
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def client(harness: HarnessProcess) -> Iterator[httpx.Client]:
    with harness.client(timeout=60) as http:
        yield http


@pytest.fixture
def worker_repo(client: httpx.Client, harness: HarnessProcess, worker_bare, session_bare) -> Path:
    """The harness's worker_repo, bootstrapped from `worker_bare`."""
    answer = client.post(
        "/v1/bootstrap",
        json={"worker_repo": {"url": str(worker_bare)}, "session_repo": {"url": str(session_bare)}},
    )
    assert answer.status_code == 200, answer.text
    return harness.workspace / "worker_repo"


def learn(client: httpx.Client, mode: str = "direct", **fields: Any) -> httpx.Response:
    body = {
        "mode": mode,
        "session_id": SESSION,
        "job_id": "job_learn_1",
        "worker": "billing-bot",
        "instructions_version": 3,
        "worker_revision": 7,
        "prompt_version": 2,
        "summary": "Recorded how to run the tests.",
        **fields,
    }
    return client.post("/v1/learning/commit", json=body)


def outcome_of(answer: httpx.Response) -> LearningCommitOutcome:
    assert answer.status_code == 200, answer.text
    return LearningCommitOutcome.model_validate(answer.json())


def trailers(git, bare: Path, ref: str) -> dict[str, str]:
    message = git("--git-dir", str(bare), "log", "-1", "--format=%B", ref)
    parsed = subprocess.run(
        ["git", "interpret-trailers", "--parse"],
        input=message,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(line.split(": ", 1) for line in parsed.splitlines())


def remote_head(git, bare: Path, branch: str) -> str:
    return git("--git-dir", str(bare), "rev-parse", f"refs/heads/{branch}")


def remote_branches(git, bare: Path) -> list[str]:
    listing = git("--git-dir", str(bare), "for-each-ref", "--format=%(refname:short)", "refs/heads")
    return sorted(listing.splitlines())


def write_notes(worker_repo: Path, name: str = "lessons.md", text: str = LESSON) -> None:
    (worker_repo / "knowledge" / name).write_text(text)


def push_elsewhere(git, bare: Path, tmp_path: Path, files: dict[str, str]) -> str:
    """Another session's push to the worker repository's main; returns the new head."""
    other = tmp_path / f"other-{len(list(tmp_path.glob('other-*')))}"
    git("clone", "--quiet", str(bare), str(other))
    for name, text in files.items():
        (other / name).parent.mkdir(parents=True, exist_ok=True)
        (other / name).write_text(text)
    git("add", "--all", cwd=other)
    git("commit", "--quiet", "-m", "another session", cwd=other)
    git("push", "--quiet", "origin", "main", cwd=other)
    return remote_head(git, bare, "main")


# -- direct ------------------------------------------------------------------------------------


def test_direct_commits_on_the_branch_with_provenance_and_pushes_it(
    client, worker_repo, worker_bare, git
):
    write_notes(worker_repo)
    (worker_repo / "knowledge" / "conventions.md").write_text("use spaces\n")
    summary = (
        "--- notes\r\nI learned:\r\n---\nthe tests need \x1b[1mmake\x1b[0m.\n\n"
        "Recorded it in knowledge/.\n---"
    )

    outcome = outcome_of(learn(client, summary=summary))

    assert outcome.status == "recorded" and outcome.error is None
    assert (outcome.pushed, outcome.push, outcome.branch) == (True, "direct", "main")
    assert outcome.files_changed == ["knowledge/conventions.md", "knowledge/lessons.md"]
    assert outcome.commit == remote_head(git, worker_bare, "main")
    assert git("--git-dir", str(worker_bare), "show", "main:knowledge/lessons.md") == LESSON.strip()
    assert trailers(git, worker_bare, "main") == {
        "VWM-Session": SESSION,
        "VWM-Job": "job_learn_1",
        "VWM-Worker": "billing-bot",
        "VWM-Instructions-Version": "3",
        "VWM-Worker-Revision": "7",
        "VWM-Learning-Prompt-Version": "2",
    }
    message = git("--git-dir", str(worker_bare), "log", "-1", "--format=%B", "main")
    assert message.splitlines()[0] == f"Learning from session {SESSION}"
    assert "Recorded it in knowledge/." in message and "\x1b" not in message
    author = git("--git-dir", str(worker_bare), "log", "-1", "--format=%an <%ae>", "main")
    assert author == "VWM <vwm@localhost>"
    assert git("status", "--porcelain", cwd=worker_repo) == ""


def test_a_long_summary_keeps_its_end_and_the_trailers(client, worker_repo, worker_bare, git):
    write_notes(worker_repo)
    summary = "x" * 10_000 + "\n\nThe last paragraph says what was recorded."

    outcome_of(learn(client, summary=summary))

    message = git("--git-dir", str(worker_bare), "log", "-1", "--format=%B", "main")
    assert len(message.encode()) < SUMMARY_BYTES + 1000
    assert "The last paragraph says what was recorded." in message
    assert trailers(git, worker_bare, "main")["VWM-Session"] == SESSION


def test_a_remote_that_moved_on_gets_the_commit_rebased(
    client, worker_repo, worker_bare, git, tmp_path
):
    theirs = push_elsewhere(git, worker_bare, tmp_path, {"knowledge/theirs.md": "theirs\n"})
    write_notes(worker_repo)

    outcome = outcome_of(learn(client))

    assert (outcome.pushed, outcome.push, outcome.branch) == (True, "rebased", "main")
    assert outcome.commit == remote_head(git, worker_bare, "main")
    assert git("--git-dir", str(worker_bare), "rev-parse", "main~1") == theirs
    assert outcome.files_changed == ["knowledge/lessons.md"]
    assert trailers(git, worker_bare, "main")["VWM-Job"] == "job_learn_1"


def test_a_conflicting_remote_gets_the_commit_on_the_learning_branch(
    client, worker_repo, worker_bare, git, tmp_path
):
    theirs = push_elsewhere(git, worker_bare, tmp_path, {"knowledge/conventions.md": "theirs\n"})
    (worker_repo / "knowledge" / "conventions.md").write_text("ours\n")

    outcome = outcome_of(learn(client))

    assert outcome.push == "fallback_branch" and outcome.branch == f"learning/{SESSION}"
    assert outcome.pushed is True and outcome.error is None
    assert remote_head(git, worker_bare, "main") == theirs
    assert remote_head(git, worker_bare, f"learning/{SESSION}") == outcome.commit


def test_an_unreachable_remote_is_reported_and_the_commit_kept(
    client, worker_repo, worker_bare, git
):
    worker_bare.rename(worker_bare.with_name("gone.git"))
    write_notes(worker_repo)

    outcome = outcome_of(learn(client))

    assert outcome.status == "recorded" and outcome.pushed is False and outcome.push == "none"
    assert outcome.branch is None
    assert outcome.error is not None and outcome.error["code"] == "push_failed"
    assert "unreachable" in outcome.error["message"]
    assert outcome.commit == git("rev-parse", "HEAD", cwd=worker_repo)
    assert outcome.files_changed == ["knowledge/lessons.md"]


# -- review ------------------------------------------------------------------------------------


def test_review_pushes_a_learning_branch_and_leaves_main_without_the_notes(
    client, harness, worker_repo, worker_bare, git
):
    main_before = remote_head(git, worker_bare, "main")
    write_notes(worker_repo)
    (worker_repo / "knowledge" / "conventions.md").write_text("use spaces\n")

    outcome = outcome_of(learn(client, "review"))

    branch = f"learning/{SESSION}"
    assert outcome.status == "recorded" and outcome.error is None
    assert (outcome.pushed, outcome.push, outcome.branch) == (True, "direct", branch)
    assert outcome.files_changed == ["knowledge/conventions.md", "knowledge/lessons.md"]
    assert remote_head(git, worker_bare, branch) == outcome.commit
    assert git("--git-dir", str(worker_bare), "rev-parse", f"{branch}~1") == main_before
    assert trailers(git, worker_bare, branch)["VWM-Worker-Revision"] == "7"
    assert remote_head(git, worker_bare, "main") == main_before
    # Back on main, whose tree holds none of it.
    assert git("symbolic-ref", "--short", "HEAD", cwd=worker_repo) == "main"
    assert git("rev-parse", "HEAD", cwd=worker_repo) == main_before
    assert git("status", "--porcelain", cwd=worker_repo) == ""
    assert not (worker_repo / "knowledge" / "lessons.md").exists()
    assert (worker_repo / "knowledge" / "conventions.md").read_text() == "use tabs\n"

    ended = client.post("/v1/shutdown")

    assert ended.status_code == 200, ended.text
    saved = ended.json()["repos"]["worker_repo"]
    assert saved["committed"] is None and saved["branch"] == "main"
    assert remote_head(git, worker_bare, "main") == main_before
    assert remote_branches(git, worker_bare) == [branch, "main"]


def test_a_second_review_of_the_same_session_gets_a_branch_of_its_own(
    client, worker_repo, worker_bare, git
):
    write_notes(worker_repo)
    first = outcome_of(learn(client, "review"))
    write_notes(worker_repo, "more.md", "more\n")

    second = outcome_of(learn(client, "review", job_id="job_learn_2"))

    assert second.pushed is True and second.error is None
    assert second.commit is not None and second.commit != first.commit
    assert second.branch == f"learning/{SESSION}-{second.commit[:12]}"
    assert second.files_changed == ["knowledge/more.md"]
    assert remote_head(git, worker_bare, f"learning/{SESSION}") == first.commit
    assert remote_head(git, worker_bare, second.branch) == second.commit
    assert trailers(git, worker_bare, second.branch)["VWM-Job"] == "job_learn_2"
    assert git("status", "--porcelain", cwd=worker_repo) == ""
    assert git("symbolic-ref", "--short", "HEAD", cwd=worker_repo) == "main"


def test_review_with_an_unreachable_remote_still_returns_to_main(
    client, worker_repo, worker_bare, git
):
    main_before = git("rev-parse", "HEAD", cwd=worker_repo)
    worker_bare.rename(worker_bare.with_name("gone.git"))
    write_notes(worker_repo)

    outcome = outcome_of(learn(client, "review"))

    assert outcome.status == "recorded" and outcome.pushed is False and outcome.branch is None
    assert outcome.error is not None and outcome.error["code"] == "push_failed"
    assert git("symbolic-ref", "--short", "HEAD", cwd=worker_repo) == "main"
    assert git("rev-parse", "HEAD", cwd=worker_repo) == main_before
    assert git("status", "--porcelain", cwd=worker_repo) == ""
    # The commit is kept in the workspace, on its own branch.
    assert git("rev-parse", f"refs/heads/learning/{SESSION}", cwd=worker_repo) == outcome.commit


def test_review_of_a_worker_repo_without_commits(
    client, harness, bare_repo_factory, session_bare, git
):
    empty = bare_repo_factory("empty-knowledge", empty=True)
    boot = client.post(
        "/v1/bootstrap",
        json={"worker_repo": {"url": str(empty)}, "session_repo": {"url": str(session_bare)}},
    )
    assert boot.status_code == 200, boot.text
    worker_repo = harness.workspace / "worker_repo"
    (worker_repo / "knowledge").mkdir()
    write_notes(worker_repo)

    outcome = outcome_of(learn(client, "review"))

    assert outcome.pushed is True and outcome.branch == f"learning/{SESSION}"
    assert remote_branches(git, empty) == [f"learning/{SESSION}"]
    assert git("symbolic-ref", "--short", "HEAD", cwd=worker_repo) == "main"
    assert git("status", "--porcelain", cwd=worker_repo) == ""
    assert not (worker_repo / "knowledge" / "lessons.md").exists()


# -- nothing, refusals -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["direct", "review"])
def test_nothing_learned_commits_nothing(client, worker_repo, worker_bare, git, mode):
    main_before = remote_head(git, worker_bare, "main")

    outcome = outcome_of(learn(client, mode))

    assert outcome == LearningCommitOutcome(status="nothing")
    assert remote_head(git, worker_bare, "main") == main_before
    assert remote_branches(git, worker_bare) == ["main"]
    assert git("branch", "--format=%(refname:short)", cwd=worker_repo) == "main"


def test_refused_while_a_job_runs(client, worker_repo, worker_bare, git):
    started = client.post("/v1/jobs", json={"prompt": "emit 1 0 hang", "mode": "async"})
    assert started.status_code == 202, started.text
    write_notes(worker_repo)
    main_before = remote_head(git, worker_bare, "main")

    answer = learn(client)

    assert answer.status_code == 409
    assert answer.json()["error"]["code"] == "job_running"
    assert answer.json()["error"]["details"]["running_job_id"] == started.json()["job_id"]
    assert remote_head(git, worker_bare, "main") == main_before
    assert git("status", "--porcelain", cwd=worker_repo) != ""  # left as it was
    client.post(f"/v1/jobs/{started.json()['job_id']}/cancel")


def test_a_workspace_without_a_worker_repo_is_refused(client, session_bare):
    boot = client.post("/v1/bootstrap", json={"session_repo": {"url": str(session_bare)}})
    assert boot.status_code == 200, boot.text

    answer = learn(client)

    assert answer.status_code == 409
    assert answer.json()["error"]["code"] == "no_worker_repo"


def test_another_sessions_learning_is_refused(client, worker_repo, git):
    write_notes(worker_repo)

    answer = learn(client, session_id="sess-other")

    assert answer.status_code == 409
    assert answer.json()["error"]["code"] == "session_mismatch"
    assert git("log", "--format=%s", cwd=worker_repo) == "initial commit"


def test_an_origin_changed_in_the_workspace_is_refused(
    client, worker_repo, bare_repo_factory, worker_bare, git
):
    elsewhere = bare_repo_factory("elsewhere")
    git("remote", "set-url", "origin", str(elsewhere), cwd=worker_repo)
    write_notes(worker_repo)

    answer = learn(client)

    assert answer.status_code == 409
    assert answer.json()["error"]["code"] == "unsafe_repository"
    assert git("log", "--format=%s", cwd=worker_repo) == "initial commit"
    assert remote_branches(git, elsewhere) == ["main"]


@pytest.mark.parametrize(
    "change",
    [
        {"surprise": 1},
        {"mode": "later"},
        {"session_id": None},
        {"session_id": "../x"},
        {"job_id": "job 1"},
        {"worker": "a\nVWM-Session: forged"},
        {"worker_revision": "1"},
        {"worker_revision": -1},
        {"prompt_version": True},
        {"instructions_version": 1.5},
        {"summary": "x" * (64 * 1024 + 1)},
        {"summary": 7},
    ],
)
def test_bad_requests_are_refused(client, change):
    answer = learn(client, **change)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["code"] == "invalid_request"


def test_a_missing_field_is_refused(client):
    answer = client.post("/v1/learning/commit", json={"mode": "direct", "session_id": SESSION})
    assert answer.status_code == 422
    assert answer.json()["error"]["code"] == "invalid_request"


def test_the_route_needs_the_session_token(harness):
    answer = httpx.post(f"{harness.url}/v1/learning/commit", json={}, timeout=10)
    assert answer.status_code == 401
