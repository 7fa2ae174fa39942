"""git wrappers against real local bare repositories: clone, commit, push, rejection, failures."""

from __future__ import annotations

import asyncio
import socket

import pytest

from harness import gitops
from harness.errors import BadRequest, GitError, PushRejected, RepoUrlNotAllowed

# Every test runs without global git config, like a fresh container.
pytestmark = pytest.mark.usefixtures("isolated_git")


async def test_clone_checks_out_the_branch(bare_repo_factory, tmp_path):
    bare = bare_repo_factory(files={"notes/a.md": "a"})
    result = await gitops.clone(str(bare), "main", tmp_path / "clone", allow_local=True)
    assert result.created_branch is False
    assert result.head == await gitops.head_sha(tmp_path / "clone")
    assert (tmp_path / "clone" / "notes" / "a.md").read_text() == "a"
    assert await gitops.current_branch(tmp_path / "clone") == "main"


async def test_clone_of_an_empty_bare_repo_creates_the_branch_locally(
    bare_repo_factory, tmp_path, git
):
    bare = bare_repo_factory("empty", empty=True)
    dest = tmp_path / "clone"
    result = await gitops.clone(str(bare), "task-1", dest, allow_local=True)
    assert result == gitops.CloneResult(branch="task-1", created_branch=True, head=None)
    assert await gitops.current_branch(dest) == "task-1"
    (dest / "first.txt").write_text("first")
    sha = await gitops.commit_all(dest, "first commit")
    assert await gitops.push(dest, "task-1", allow_local=True) is True
    assert git("--git-dir", str(bare), "rev-parse", "refs/heads/task-1") == sha


async def test_a_branch_missing_on_the_remote_starts_from_its_default_branch(
    bare_repo_factory, tmp_path
):
    bare = bare_repo_factory()
    dest = tmp_path / "clone"
    result = await gitops.clone(str(bare), "session/abc", dest, allow_local=True)
    assert result.created_branch is True
    assert await gitops.current_branch(dest) == "session/abc"
    assert (dest / "README.md").exists()


async def test_clone_checks_out_an_existing_branch_other_than_the_default(
    bare_repo_factory, tmp_path, git
):
    bare = bare_repo_factory()
    seed = bare.parent / "origin-seed"
    git("checkout", "--quiet", "-b", "task/7", cwd=seed)
    (seed / "task.txt").write_text("on the task branch")
    git("add", "--all", cwd=seed)
    git("commit", "--quiet", "-m", "task work", cwd=seed)
    git("push", "--quiet", str(bare), "task/7:task/7", cwd=seed)
    # A branch whose name starts the wanted one's is not taken for it.
    git("push", "--quiet", str(bare), "task/7:task/7-old", cwd=seed)

    dest = tmp_path / "clone"
    result = await gitops.clone(str(bare), "task/7", dest, allow_local=True)
    assert result.created_branch is False
    assert result.head == git("--git-dir", str(bare), "rev-parse", "refs/heads/task/7")
    assert (dest / "task.txt").read_text() == "on the task branch"
    missing = await gitops.clone(str(bare), "task", tmp_path / "other", allow_local=True)
    assert missing.created_branch is True
    assert missing.head == git("--git-dir", str(bare), "rev-parse", "refs/heads/main")


async def test_a_clone_holds_no_sample_hooks(bare_repo_factory, tmp_path):
    dest = tmp_path / "clone"
    await gitops.clone(str(bare_repo_factory()), "main", dest, allow_local=True)
    hooks = dest / ".git" / "hooks"
    assert not hooks.exists() or not any(hooks.iterdir())


async def test_commit_all_stages_everything_and_returns_none_when_clean(
    bare_repo_factory, tmp_path, git
):
    dest = tmp_path / "clone"
    await gitops.clone(str(bare_repo_factory()), "main", dest, allow_local=True)
    assert await gitops.commit_all(dest, "nothing") is None
    (dest / "new" / "file.txt").parent.mkdir()
    (dest / "new" / "file.txt").write_text("new")
    (dest / "README.md").unlink()
    sha = await gitops.commit_all(dest, "agent work", author_name="Agent", author_email="a@x")
    assert sha is not None and sha == await gitops.head_sha(dest)
    assert git("log", "-1", "--format=%an <%ae>|%cn|%s", cwd=dest) == "Agent <a@x>|Agent|agent work"
    assert git("show", "--name-status", "--format=", "HEAD", cwd=dest).splitlines() == [
        "D\tREADME.md",
        "A\tnew/file.txt",
    ]
    assert await gitops.commit_all(dest, "again") is None


async def test_push_is_visible_in_the_bare_repo(bare_repo_factory, tmp_path, git):
    bare = bare_repo_factory()
    dest = tmp_path / "clone"
    await gitops.clone(str(bare), "main", dest, allow_local=True)
    (dest / "work.txt").write_text("done")
    sha = await gitops.commit_all(dest, "work")
    assert await gitops.push(dest, "main", allow_local=True) is True
    assert git("--git-dir", str(bare), "log", "-1", "--format=%H %s", "main") == f"{sha} work"
    assert await gitops.push(dest, "main", allow_local=True) is True  # nothing new: still fine


async def test_push_rejected_when_the_remote_moved_on_keeps_the_local_commit(
    bare_repo_factory, tmp_path, git
):
    bare = bare_repo_factory()
    mine, theirs = tmp_path / "mine", tmp_path / "theirs"
    await gitops.clone(str(bare), "main", mine, allow_local=True)
    await gitops.clone(str(bare), "main", theirs, allow_local=True)
    (theirs / "theirs.txt").write_text("theirs")
    await gitops.commit_all(theirs, "theirs")
    await gitops.push(theirs, "main", allow_local=True)
    (mine / "mine.txt").write_text("mine")
    my_sha = await gitops.commit_all(mine, "mine")

    with pytest.raises(PushRejected) as caught:
        await gitops.push(mine, "main", allow_local=True)

    error = caught.value
    assert "remote branch has commits" in error.message
    assert "local commits are kept" in error.message
    assert error.details["exit_code"] != 0 and "rejected" in error.details["stderr"]
    assert error.details["branch"] == "main"
    assert await gitops.head_sha(mine) == my_sha
    assert git("--git-dir", str(bare), "log", "-1", "--format=%s", "main") == "theirs"


async def test_push_to_a_vanished_remote_says_it_is_unreachable(bare_repo_factory, tmp_path, git):
    bare = bare_repo_factory()
    dest = tmp_path / "clone"
    await gitops.clone(str(bare), "main", dest, allow_local=True)
    (dest / "x.txt").write_text("x")
    sha = await gitops.commit_all(dest, "x")
    bare.rename(tmp_path / "moved.git")
    with pytest.raises(PushRejected) as caught:
        await gitops.push(dest, "main", allow_local=True)
    assert "unreachable" in caught.value.message
    assert await gitops.head_sha(dest) == sha


async def test_push_of_a_branch_without_commits_is_a_no_op(bare_repo_factory, tmp_path):
    dest = tmp_path / "clone"
    await gitops.clone(str(bare_repo_factory(empty=True)), "main", dest, allow_local=True)
    assert await gitops.push(dest, "main", allow_local=True) is False


async def test_cloning_a_bad_url_fails_with_a_clear_message(tmp_path):
    with pytest.raises(GitError) as caught:
        await gitops.clone(
            str(tmp_path / "no-such-repo"), "main", tmp_path / "dest", allow_local=True
        )
    error = caught.value
    assert error.message.startswith(f"cannot clone {tmp_path / 'no-such-repo'}:")
    assert "does not exist" in error.message
    assert "check the URL" in error.message
    assert error.details["exit_code"] not in (0, None)
    assert error.details["command"].startswith("git clone")
    assert not (tmp_path / "dest").exists()


async def test_credentials_in_urls_never_appear_in_errors(tmp_path):
    port = _closed_port()
    url = f"http://user:s3cr3t-token@127.0.0.1:{port}/repo.git"
    with pytest.raises(GitError) as caught:
        await gitops.clone(url, "main", tmp_path / "dest", allow_local=True)
    text = repr(caught.value.to_dict())
    assert "s3cr3t-token" not in text
    assert "http://***@127.0.0.1" in caught.value.details["command"]


async def test_a_hanging_remote_times_out_and_the_process_is_killed(tmp_path):
    with socket.socket() as server:  # accepts connections and never answers
        server.bind(("127.0.0.1", 0))
        server.listen()
        url = f"http://127.0.0.1:{server.getsockname()[1]}/repo.git"
        started = asyncio.get_running_loop().time()
        with pytest.raises(GitError) as caught:
            await gitops.clone(url, "main", tmp_path / "dest", timeout_s=1.0, allow_local=True)
        assert asyncio.get_running_loop().time() - started < 10
    assert "took longer than 1 s" in caught.value.message
    assert caught.value.details["timed_out"] is True


async def test_is_clone_of_compares_urls_not_spellings(bare_repo_factory, tmp_path):
    bare = bare_repo_factory()
    other = bare_repo_factory("other")
    dest = tmp_path / "clone"
    assert await gitops.is_clone_of(dest, str(bare)) is False
    await gitops.clone(str(bare), "main", dest, allow_local=True)
    assert await gitops.is_clone_of(dest, str(bare))
    assert await gitops.is_clone_of(dest, f"{bare}/")
    assert await gitops.is_clone_of(dest, f"file://{bare}")
    assert await gitops.is_clone_of(dest, str(other)) is False


async def test_init_makes_an_empty_repo_without_a_remote(tmp_path):
    repo = tmp_path / "repo"
    await gitops.init(repo, "main")
    assert await gitops.current_branch(repo) == "main"
    assert await gitops.head_sha(repo) is None
    assert await gitops.remote_url(repo) is None
    (repo / "a.txt").write_text("a")
    assert await gitops.commit_all(repo, "first") is not None


@pytest.mark.parametrize("branch", ["-delete", "a..b", "with space", "ends/", "x.lock", ""])
async def test_branch_names_git_would_misread_are_refused(tmp_path, branch):
    with pytest.raises(BadRequest):
        await gitops.clone(str(tmp_path / "any"), branch, tmp_path / "dest", allow_local=True)


@pytest.mark.parametrize(
    "branch",
    ["main", "task-7", "feature/task_7", "a/b/c", "0", "HEAD", "head", "a/HEAD", "ORIG_HEAD",
     "refs/heads/x", "-x", "a--b", "a//b", "a/", "/a", "a.b", "x.lock", "a@{1}", "é"],
)  # fmt: skip
async def test_a_plain_branch_name_is_one_git_accepts(branch):
    """The names judged without git (`is_plain_branch`) are ones git accepts; all others are
    still asked of git, which has the last word."""
    done = await gitops.run_git("check-ref-format", "--branch", branch, check=False)
    if gitops.is_plain_branch(branch):
        assert done.exit_code == 0
    try:
        await gitops.check_branch_name(branch)
        accepted = True
    except BadRequest:
        accepted = False
    assert accepted == (done.exit_code == 0 and not branch.startswith("-"))


def test_mask_credentials():
    assert gitops.mask_credentials("https://u:p@h/r.git and ssh://git@h/r") == (
        "https://***@h/r.git and ssh://***@h/r"
    )
    assert gitops.mask_credentials("git@github.com:o/r.git") == "git@github.com:o/r.git"


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("allow_local", [False, True])
async def test_transports_that_run_programs_are_not_allowed(tmp_path, allow_local):
    marker = tmp_path / "pwned"
    for url in (f"ext::sh -c touch% {marker}", f"EXT::sh -c touch% {marker}", "fd::3"):
        with pytest.raises(RepoUrlNotAllowed) as caught:
            await gitops.clone(url, "main", tmp_path / "dest", allow_local=allow_local)
        assert "not allowed" in caught.value.message
    assert not marker.exists()
    # Git itself refuses them too, should a URL ever get past the check.
    done = await gitops.run_git(
        "ls-remote", f"ext::sh -c touch% {marker}", check=False, allow_local=allow_local
    )
    assert done.exit_code != 0 and not marker.exists()
