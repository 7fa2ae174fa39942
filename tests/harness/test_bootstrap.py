"""Bootstrap of a workspace (clones, instruction file, state) and session end (transcript, commit
and push), against real local bare repositories."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from harness import gitops
from harness.bootstrap import BootstrapRequest, RepoSpec, bootstrap
from harness.errors import Conflict, GitError
from harness.settings import GitSettings
from harness.transcript import shutdown_repos, write_transcript
from harness.workspace import Workspace

pytestmark = pytest.mark.usefixtures("isolated_git")

SESSION = "s-1"
LOCAL_GIT = GitSettings(allow_local=True)  # the remotes here are local bare repositories
TRANSCRIPT = f".vwm/sessions/{SESSION}"


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path / "ws")


@pytest.fixture
def request_for(bare_repo_factory):
    worker = bare_repo_factory("worker", files={"knowledge/conventions.md": "use tabs"})
    session = bare_repo_factory("session", files={"app.py": "print('v1')\n"})

    def make(**overrides) -> BootstrapRequest:
        fields = {
            "worker_repo": {"url": str(worker)},
            "session_repo": {"url": str(session), "branch": "main"},
            "system_instructions": "Be careful with production data.",
            "worker_instructions": "You maintain the billing service.",
            **overrides,
        }
        return BootstrapRequest.model_validate(fields)

    make.worker = worker
    make.session = session
    return make


def snapshot(ws: Workspace, name: str = "CLAUDE.md") -> dict[str, float]:
    paths = [ws.root / name, ws.state_file]
    for repo in (ws.worker_repo, ws.session_repo):
        if (repo / ".git").exists():
            paths += [repo / ".git" / "HEAD", repo / ".git" / "index", repo / ".git" / "config"]
    return {str(path): path.stat().st_mtime_ns for path in paths}


# -- bootstrap --------------------------------------------------------------------------------


async def test_bootstrap_clones_both_repos_and_writes_the_instruction_file(ws, request_for):
    report = await bootstrap(ws, request_for(), "CLAUDE.md", allow_local=True)

    assert report.changed == ["worker_repo", "session_repo", "CLAUDE.md"]
    assert report.unchanged == [] and report.notes == []
    assert (ws.worker_repo / "knowledge" / "conventions.md").read_text() == "use tabs"
    assert (ws.session_repo / "app.py").exists()
    assert ws.cli_home.is_dir() and ws.jobs_dir.is_dir()
    text = (ws.root / "CLAUDE.md").read_text()
    system = text.index("# System instructions\n\nBe careful with production data.")
    worker = text.index("# Worker instructions\n\nYou maintain the billing service.")
    assert system < worker
    assert "`worker_repo/` holds your knowledge base" in text
    assert "`session_repo/` is the task of this session" in text


KNOWLEDGE_HEADING = "# What earlier sessions learned"


def listed_knowledge(instructions: str) -> list[str]:
    section = instructions[instructions.index(KNOWLEDGE_HEADING) :]
    return [line for line in section.splitlines() if line.startswith("- ")]


async def test_the_instruction_file_points_to_what_earlier_sessions_learned(
    ws, request_for, bare_repo_factory
):
    worker = bare_repo_factory(
        "learned",
        files={
            "README.md": "# not knowledge\n",
            "knowledge/testing.md": "make test\n",
            "knowledge/deploy/steps.md": "deploy\n",
            "knowledge/.hidden.md": "hidden\n",
            "knowledge/.drafts/draft.md": "draft\n",
        },
    )
    await bootstrap(
        ws, request_for(worker_repo={"url": str(worker)}), "CLAUDE.md", allow_local=True
    )
    (ws.worker_repo / "knowledge" / "link.md").symlink_to(ws.root / "CLAUDE.md")

    report = await bootstrap(
        ws, request_for(worker_repo={"url": str(worker)}), "CLAUDE.md", allow_local=True
    )

    assert report.changed == []  # a link is not listed: nothing new to say
    text = (ws.root / "CLAUDE.md").read_text()
    section = text[text.index(KNOWLEDGE_HEADING) :]
    assert text.index("# Workspace") < text.index(KNOWLEDGE_HEADING)
    assert "`worker_repo/knowledge/` holds what earlier sessions of this worker learned" in section
    assert "read the notes there that bear on it" in section
    assert listed_knowledge(text) == [
        "- `worker_repo/knowledge/deploy/steps.md`",
        "- `worker_repo/knowledge/testing.md`",
    ]


async def test_a_long_knowledge_base_lists_a_hundred_notes_and_counts_the_rest(ws, request_for):
    await bootstrap(ws, request_for(), "CLAUDE.md", allow_local=True)
    for number in range(104):
        (ws.worker_repo / "knowledge" / f"note-{number:03}.md").write_text("a note\n")

    report = await bootstrap(ws, request_for(), "CLAUDE.md", allow_local=True)

    assert report.changed == ["CLAUDE.md"]  # notes added since: the file says so now
    listed = listed_knowledge((ws.root / "CLAUDE.md").read_text())
    assert len(listed) == 101
    assert listed[0] == "- `worker_repo/knowledge/conventions.md`"
    assert listed[99] == "- `worker_repo/knowledge/note-098.md`"
    assert listed[100] == "- and 5 more"
    again = await bootstrap(ws, request_for(), "CLAUDE.md", allow_local=True)
    assert "CLAUDE.md" in again.unchanged


async def test_without_knowledge_there_is_no_pointer_to_it(ws, request_for, bare_repo_factory):
    worker = bare_repo_factory("unlearned")  # a README.md only
    await bootstrap(
        ws, request_for(worker_repo={"url": str(worker)}), "CLAUDE.md", allow_local=True
    )
    text = (ws.root / "CLAUDE.md").read_text()
    assert KNOWLEDGE_HEADING not in text
    assert "record what future sessions should know in `worker_repo/knowledge/`" in text


async def test_bootstrap_records_what_it_did_without_the_instruction_text(ws, request_for):
    await bootstrap(ws, request_for(), "AGENTS.md", allow_local=True)
    record = ws.load_state()["bootstrap"]
    assert record["worker_repo"] == {"url": str(request_for.worker), "branch": "main"}
    assert record["session_repo"] == {"url": str(request_for.session), "branch": "main"}
    assert record["instruction_file"] == "AGENTS.md"
    assert len(record["instructions_sha256"]) == 64
    assert "billing" not in ws.state_file.read_text()


async def test_a_second_bootstrap_with_the_same_request_changes_nothing(ws, request_for):
    await bootstrap(ws, request_for(), "CLAUDE.md", allow_local=True)
    (ws.session_repo / "wip.txt").write_text("uncommitted agent work")
    before = snapshot(ws)
    heads = [await gitops.head_sha(ws.worker_repo), await gitops.head_sha(ws.session_repo)]

    report = await bootstrap(ws, request_for(), "CLAUDE.md", allow_local=True)

    assert report.changed == []
    assert report.unchanged == ["worker_repo", "session_repo", "CLAUDE.md"]
    assert snapshot(ws) == before
    assert [await gitops.head_sha(ws.worker_repo), await gitops.head_sha(ws.session_repo)] == heads
    assert (ws.session_repo / "wip.txt").read_text() == "uncommitted agent work"


async def test_an_existing_clone_is_not_fetched_even_if_the_remote_moved(
    ws, request_for, tmp_path, git
):
    await bootstrap(ws, request_for(), "CLAUDE.md", allow_local=True)
    head = await gitops.head_sha(ws.session_repo)
    other = tmp_path / "other"
    git("clone", "--quiet", str(request_for.session), str(other))
    (other / "later.txt").write_text("later")
    git("add", "--all", cwd=other)
    git("commit", "--quiet", "-m", "later", cwd=other)
    git("push", "--quiet", "origin", "main", cwd=other)

    report = await bootstrap(ws, request_for(), "CLAUDE.md", allow_local=True)

    assert "session_repo" in report.unchanged
    assert await gitops.head_sha(ws.session_repo) == head
    assert not (ws.session_repo / "later.txt").exists()


async def test_changed_instructions_rewrite_only_the_instruction_file(ws, request_for):
    await bootstrap(ws, request_for(), "GEMINI.md", allow_local=True)
    first_hash = ws.load_state()["bootstrap"]["instructions_sha256"]
    report = await bootstrap(
        ws, request_for(worker_instructions="Now the payments team."), "GEMINI.md", allow_local=True
    )
    assert report.changed == ["GEMINI.md"]
    assert report.unchanged == ["worker_repo", "session_repo"]
    assert "Now the payments team." in (ws.root / "GEMINI.md").read_text()
    assert ws.load_state()["bootstrap"]["instructions_sha256"] != first_hash


async def test_a_repo_folder_holding_a_clone_of_another_url_is_a_conflict(
    ws, request_for, bare_repo_factory
):
    await bootstrap(ws, request_for(), "CLAUDE.md", allow_local=True)
    elsewhere = bare_repo_factory("elsewhere")
    with pytest.raises(Conflict) as caught:
        await bootstrap(
            ws, request_for(session_repo={"url": str(elsewhere)}), "CLAUDE.md", allow_local=True
        )
    assert f"should be a clone of {elsewhere}" in caught.value.message
    assert caught.value.details["found"] == str(request_for.session)
    assert (ws.session_repo / "app.py").exists()  # left alone


async def test_a_repo_folder_holding_other_files_is_a_conflict(ws, request_for):
    ws.session_repo.mkdir(parents=True)
    (ws.session_repo / "stray.txt").write_text("stray")
    with pytest.raises(Conflict):
        await bootstrap(ws, request_for(), "CLAUDE.md", allow_local=True)
    assert (ws.session_repo / "stray.txt").read_text() == "stray"


async def test_without_a_session_repo_an_empty_repo_is_the_working_dir(ws, request_for):
    report = await bootstrap(
        ws, request_for(session_repo=None, worker_repo=None), "CLAUDE.md", allow_local=True
    )
    assert report.changed == ["session_repo", "CLAUDE.md"]
    assert await gitops.current_branch(ws.session_repo) == "main"
    assert await gitops.remote_url(ws.session_repo) is None
    assert not ws.worker_repo.exists()
    assert "worker_repo/" not in (ws.root / "CLAUDE.md").read_text()
    again = await bootstrap(
        ws, request_for(session_repo=None, worker_repo=None), "CLAUDE.md", allow_local=True
    )
    assert again.changed == []


async def test_a_branch_the_remote_lacks_is_created_and_noted(ws, request_for, bare_repo_factory):
    empty = bare_repo_factory("empty", empty=True)
    request = request_for(session_repo={"url": str(empty), "branch": "task-7"})
    report = await bootstrap(ws, request, "CLAUDE.md", allow_local=True)
    assert "session_repo" in report.changed
    assert any("'task-7' does not exist" in note for note in report.notes)
    assert await gitops.current_branch(ws.session_repo) == "task-7"


async def test_a_failed_clone_raises_git_error_and_can_be_retried(ws, request_for, tmp_path):
    request = request_for(session_repo={"url": str(tmp_path / "missing.git")})
    with pytest.raises(GitError):
        await bootstrap(ws, request, "CLAUDE.md", allow_local=True)
    report = await bootstrap(ws, request_for(), "CLAUDE.md", allow_local=True)
    assert "session_repo" in report.changed


async def test_both_repos_are_cloned_at_once(ws, request_for, monkeypatch):
    """Neither clone finishes until the other has started: one after the other, this bootstrap
    would never end."""
    started = {ws.worker_repo: asyncio.Event(), ws.session_repo: asyncio.Event()}
    real_clone = gitops.clone

    async def clone_once_both_started(url, branch, dest, **options):
        started[dest].set()
        for event in started.values():
            await event.wait()
        return await real_clone(url, branch, dest, **options)

    monkeypatch.setattr(gitops, "clone", clone_once_both_started)
    async with asyncio.timeout(60):
        report = await bootstrap(ws, request_for(), "CLAUDE.md", allow_local=True)
    assert report.changed == ["worker_repo", "session_repo", "CLAUDE.md"]
    assert (ws.worker_repo / "knowledge" / "conventions.md").exists()
    assert (ws.session_repo / "app.py").exists()


async def test_a_failed_clone_lets_the_other_finish_and_the_first_failure_is_raised(
    ws, request_for, tmp_path
):
    request = request_for(worker_repo={"url": str(tmp_path / "missing-worker.git")})
    with pytest.raises(GitError) as caught:
        await bootstrap(ws, request, "CLAUDE.md", allow_local=True)
    assert "missing-worker.git" in caught.value.message
    assert (ws.session_repo / "app.py").exists()  # a whole clone, which a retry keeps
    both_fail = request_for(
        worker_repo={"url": str(tmp_path / "missing-worker.git")},
        session_repo={"url": str(tmp_path / "missing-session.git")},
    )
    with pytest.raises(GitError) as caught:
        await bootstrap(Workspace(tmp_path / "other-ws"), both_fail, "CLAUDE.md", allow_local=True)
    assert "missing-worker.git" in caught.value.message  # worker_repo's: it comes first
    report = await bootstrap(ws, request_for(), "CLAUDE.md", allow_local=True)
    assert report.changed == ["worker_repo", "CLAUDE.md"]
    assert report.unchanged == ["session_repo"]


@pytest.mark.parametrize(
    "body",
    [
        {"surprise": 1},
        {"session_repo": {"url": "x", "surprise": 1}},
        {"session_repo": {"url": ""}},
        {"session_repo": {"url": "--upload-pack=touch /tmp/x"}},
        {"session_repo": {"url": "x", "branch": "-f"}},
        {"session_repo": {"url": "x\nfoo"}},
    ],
)
def test_bootstrap_requests_are_validated(body):
    with pytest.raises(ValidationError):
        BootstrapRequest.model_validate(body)


def test_repo_spec_defaults_to_main():
    assert RepoSpec(url="https://example.invalid/r.git").branch == "main"
    assert BootstrapRequest().session_repo is None


async def test_the_instruction_file_name_must_be_a_plain_name(ws, request_for):
    with pytest.raises(ValueError):
        await bootstrap(ws, request_for(), "../CLAUDE.md", allow_local=True)


# -- transcript and shutdown ------------------------------------------------------------------


def write_job(ws: Workspace, job_id: str, ts: float, prompt: str, final_text: str) -> None:
    events = [
        ("job_started", {"prompt": prompt, "cli": "claude"}),
        ("tool_call", {"id": "t1", "name": "Bash", "input": {"command": "ls -la"}}),
        ("tool_result", {"id": "t1", "output": "app.py", "is_error": False}),
        ("result", {"final_text": final_text, "is_error": False}),
        ("job_finished", {"status": "succeeded"}),
    ]
    ws.jobs_dir.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps({"job_id": job_id, "seq": seq, "kind": kind, "data": data, "ts": ts + seq})
        for seq, (kind, data) in enumerate(events, 1)
    ]
    (ws.jobs_dir / f"{job_id}.jsonl").write_text("\n".join(lines) + "\n")
    (ws.jobs_dir / f"{job_id}.json").write_text(json.dumps({"job_id": job_id}))  # job metadata


def test_transcript_orders_jobs_by_their_first_event(ws):
    write_job(ws, "job_b", 2000.0, "Second prompt", "second answer")
    write_job(ws, "job_a", 3000.0, "Third prompt", "third answer")
    write_job(ws, "job_c", 1000.0, "First prompt", "first answer")
    with (ws.jobs_dir / "job_a.jsonl").open("a") as log:
        log.write('{"job_id": "job_a", "seq": 6, "ki')  # a crash mid-line
    repo = ws.root / "repo"
    repo.mkdir()

    path = write_transcript(ws, repo, SESSION)

    assert path == repo / TRANSCRIPT / "transcript.jsonl"
    events = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(e["job_id"], e["seq"]) for e in events][::5] == [
        ("job_c", 1),
        ("job_b", 1),
        ("job_a", 1),
    ]
    assert len(events) == 15
    markdown = (repo / TRANSCRIPT / "transcript.md").read_text()
    assert markdown.index("First prompt") < markdown.index("Second prompt")
    assert markdown.index("Second prompt") < markdown.index("Third prompt")
    assert "> First prompt" in markdown and "first answer" in markdown
    assert '`Bash` {"command": "ls -la"}' in markdown
    assert "(succeeded)" in markdown


def test_no_jobs_no_transcript(ws):
    ws.ensure_dirs()
    assert write_transcript(ws, ws.root / "repo", SESSION) is None
    assert not (ws.root / "repo").exists()


async def test_shutdown_commits_and_pushes_both_repos_with_the_transcript(ws, request_for, git):
    await bootstrap(ws, request_for(), "CLAUDE.md", allow_local=True)
    (ws.session_repo / "feature.py").write_text("print('new')\n")
    (ws.worker_repo / "knowledge" / "lesson.md").write_text("tests first")
    write_job(ws, "job_1", 1000.0, "Add the feature", "Added feature.py")

    outcome = await shutdown_repos(ws, git=LOCAL_GIT, session_id=SESSION)

    session, worker = outcome["repos"]["session_repo"], outcome["repos"]["worker_repo"]
    assert session["pushed"] and worker["pushed"]
    assert session["error"] is None and worker["error"] is None
    session_bare, worker_bare = str(request_for.session), str(request_for.worker)
    assert git("--git-dir", session_bare, "rev-parse", "main") == session["committed"]
    assert git("--git-dir", worker_bare, "rev-parse", "main") == worker["committed"]
    files = git("--git-dir", session_bare, "show", "--name-only", "--format=", "main").splitlines()
    assert sorted(files) == [f"{TRANSCRIPT}/transcript.jsonl", f"{TRANSCRIPT}/transcript.md",
                             "feature.py"]  # fmt: skip
    transcript = git("--git-dir", session_bare, "show", f"main:{TRANSCRIPT}/transcript.md")
    assert "Add the feature" in transcript and "Added feature.py" in transcript

    again = await shutdown_repos(
        ws, git=LOCAL_GIT, session_id=SESSION
    )  # nothing new: no commit, pushes are no-ops
    assert again["repos"]["session_repo"]["committed"] is None
    assert again["repos"]["session_repo"]["pushed"] is True


async def test_shutdown_of_a_repo_without_a_remote_commits_only(ws, request_for):
    await bootstrap(
        ws, request_for(session_repo=None, worker_repo=None), "CLAUDE.md", allow_local=True
    )
    (ws.session_repo / "notes.txt").write_text("notes")
    outcome = await shutdown_repos(ws, git=LOCAL_GIT, session_id=SESSION)
    assert list(outcome["repos"]) == ["session_repo"]
    assert outcome["repos"]["session_repo"]["committed"] == await gitops.head_sha(ws.session_repo)
    assert outcome["repos"]["session_repo"]["pushed"] is False
    assert outcome["transcript"] is None


async def test_a_failed_push_is_reported_after_both_repos_were_tried(ws, request_for, git):
    await bootstrap(ws, request_for(), "CLAUDE.md", allow_local=True)
    # The session repository's remote is gone by the end of the session.
    git("--git-dir", str(request_for.session), "update-ref", "-d", "refs/heads/main")
    request_for.session.rename(request_for.session.with_name("moved.git"))
    (ws.session_repo / "mine.txt").write_text("mine")
    (ws.worker_repo / "lesson.md").write_text("lesson")

    with pytest.raises(GitError) as caught:
        await shutdown_repos(ws, git=LOCAL_GIT, session_id=SESSION)

    repos = caught.value.details["repos"]
    assert repos["session_repo"]["pushed"] is False
    assert repos["session_repo"]["error"]["code"] == "push_failed"
    assert "session_repo" in caught.value.message and "kept" in caught.value.message
    assert await gitops.head_sha(ws.session_repo) == repos["session_repo"]["committed"]
    assert repos["worker_repo"]["pushed"] is True and repos["worker_repo"]["error"] is None
    worker_head = git("--git-dir", str(request_for.worker), "rev-parse", "main")
    assert worker_head == repos["worker_repo"]["committed"]


async def test_a_symlink_at_the_transcript_folder_neither_escapes_nor_blocks_saving(
    ws, request_for, tmp_path
):
    await bootstrap(
        ws, request_for(session_repo=None, worker_repo=None), "CLAUDE.md", allow_local=True
    )
    outside = tmp_path / "outside"
    outside.mkdir()
    (ws.session_repo / ".vwm").symlink_to(outside, target_is_directory=True)
    write_job(ws, "job_1", 1000.0, "prompt", "answer")

    outcome = await shutdown_repos(ws, git=LOCAL_GIT, session_id=SESSION)

    assert outcome["transcript"] is None
    assert outcome["transcript_error"]["code"] == "path_outside_workspace"
    assert list(outside.iterdir()) == []
    assert outcome["repos"]["session_repo"]["committed"] is not None
