"""Git runs nothing the workspace names: a corpus of hostile repository configurations, each planted
in ``session_repo/.git`` before the session ends, against real git and local bare repositories.

Every hostile entry points at one script that would leave a marker file (with its environment)
if anything ran it. After the end, the marker must not exist, and the session's work must be on
the remote it was cloned from, and nowhere else.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from harness import gitops
from harness.bootstrap import BootstrapRequest, bootstrap
from harness.errors import GitError, UnsafeRepository
from harness.git_room import sanitize_repository
from harness.settings import GitSettings
from harness.transcript import shutdown_repos
from harness.workspace import Workspace

pytestmark = pytest.mark.usefixtures("isolated_git")

SESSION = "s-evil"
LOCAL_GIT = GitSettings(allow_local=True)
HOOKS = ("pre-commit", "prepare-commit-msg", "commit-msg", "post-commit", "pre-push",
         "reference-transaction", "post-rewrite", "pre-rebase", "post-checkout", "pre-auto-gc",
         "push-to-checkout", "fsmonitor-watchman", "post-index-change")  # fmt: skip


@pytest.fixture
def evil(tmp_path: Path) -> Path:
    """A script that records that it ran, and with what environment."""
    script = tmp_path / "evil.sh"
    marker = tmp_path / "PWNED"
    script.write_text(f"#!/bin/sh\nenv >> {marker}\necho ran >> {marker}\nexit 0\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


@pytest.fixture
async def started(tmp_path, bare_repo_factory) -> tuple[Workspace, Path]:
    """A bootstrapped workspace whose session repo is a clone of a local bare repository."""
    bare = bare_repo_factory("session", files={"app.py": "print('v1')\n"})
    ws = Workspace(tmp_path / "ws")
    request = BootstrapRequest.model_validate({"session_repo": {"url": str(bare)}})
    await bootstrap(ws, request, "CLAUDE.md", allow_local=True)
    (ws.session_repo / "work.txt").write_text("the agent's work\n")
    return ws, bare


def hostile_configs(evil: Path, tmp_path: Path) -> dict[str, str]:
    """Config text to append to .git/config, by what it tries."""
    hooks = tmp_path / "hooks"
    hooks.mkdir(exist_ok=True)
    for hook in HOOKS:
        (hooks / hook).symlink_to(evil)
    included = tmp_path / "included.cfg"
    included.write_text(f"[core]\n\tfsmonitor = {evil}\n[alias]\n\tadd = !{evil}\n")
    return {
        "fsmonitor": f"[core]\n\tfsmonitor = {evil}\n",
        "fsmonitor-bool-hook": "[core]\n\tfsmonitor = true\n\tfsmonitorHookVersion = 2\n",
        "hooks-path": f"[core]\n\thooksPath = {hooks}\n",
        "include": f"[include]\n\tpath = {included}\n",
        "include-if": f'[includeIf "gitdir:/"]\n\tpath = {included}\n',
        "filter": f'[filter "lfs"]\n\tclean = {evil}\n\tsmudge = {evil}\n\tprocess = {evil}\n'
        "\trequired = true\n",
        "diff-external": f"[diff]\n\texternal = {evil}\n",
        "diff-textconv": f'[diff "lfs"]\n\ttextconv = {evil}\n\tcommand = {evil}\n',
        "pager-editor": f"[core]\n\tpager = {evil}\n\teditor = {evil}\n[sequence]\n\teditor = {evil}\n",
        "gpg": f"[commit]\n\tgpgSign = true\n[gpg]\n\tprogram = {evil}\n",
        "receivepack": f'[remote "origin"]\n\treceivepack = {evil}\n\tuploadpack = {evil}\n',
        "alternate-refs": f"[core]\n\talternateRefsCommand = {evil}\n",
        "credential": f"[credential]\n\thelper = !{evil}\n[core]\n\taskPass = {evil}\n",
        "ssh": f"[core]\n\tsshCommand = {evil}\n\tgitProxy = {evil}\n",
        "alias": f"[alias]\n\tcommit = !{evil}\n\tpush = !{evil}\n",
        "protocol": '[protocol]\n\tallow = always\n[protocol "ext"]\n\tallow = always\n',
        "worktree": f"[core]\n\tworktree = {tmp_path}\n\tbare = true\n",
        "maintenance": f"[maintenance]\n\tauto = true\n[gc]\n\tauto = 1\n[core]\n\tfsmonitor = {evil}\n",
        "submodule": "[submodule]\n\trecurse = true\n[push]\n\trecurseSubmodules = on-demand\n",
    }


CASES = [
    "fsmonitor", "fsmonitor-bool-hook", "hooks-path", "include", "include-if", "filter",
    "diff-external", "diff-textconv", "pager-editor", "gpg", "receivepack", "alternate-refs",
    "credential", "ssh", "alias", "protocol", "worktree", "maintenance", "submodule",
]  # fmt: skip


@pytest.mark.parametrize("case", CASES)
async def test_hostile_repository_config_runs_nothing_and_the_work_is_saved(
    started, evil, tmp_path, git, case
):
    ws, bare = started
    with (ws.session_repo / ".git" / "config").open("a") as config:
        config.write(hostile_configs(evil, tmp_path)[case])
    (ws.session_repo / ".gitattributes").write_text("* filter=lfs diff=lfs merge=lfs\n")
    # The default hooks folder too (a clone has none: an agent can make it).
    (ws.session_repo / ".git" / "hooks").mkdir(exist_ok=True)
    for hook in HOOKS:
        (ws.session_repo / ".git" / "hooks" / hook).symlink_to(evil)

    outcome = await shutdown_repos(ws, git=LOCAL_GIT, session_id=SESSION)

    assert not (tmp_path / "PWNED").exists(), (tmp_path / "PWNED").read_text()
    saved = outcome["repos"]["session_repo"]
    assert saved["error"] is None and saved["push"] == "direct"
    assert saved["dropped_config"], "the hostile keys are reported by name"
    assert git("--git-dir", str(bare), "show", "main:work.txt") == "the agent's work"


async def test_a_redirected_remote_is_not_pushed_to(
    started, evil, tmp_path, git, bare_repo_factory
):
    ws, bare = started
    elsewhere = bare_repo_factory("elsewhere")
    with (ws.session_repo / ".git" / "config").open("a") as config:
        config.write(
            f'[remote "origin"]\n\tpushurl = {elsewhere}\n'
            f'[url "{elsewhere}"]\n\tinsteadOf = {bare}\n\tpushInsteadOf = {bare}\n'
        )
    outcome = await shutdown_repos(ws, git=LOCAL_GIT, session_id=SESSION)
    assert outcome["repos"]["session_repo"]["push"] == "direct"
    assert git("--git-dir", str(bare), "show", "main:work.txt") == "the agent's work"
    assert "work.txt" not in git("--git-dir", str(elsewhere), "ls-tree", "-r", "main")


async def test_an_origin_changed_in_the_workspace_is_not_pushed_to(
    started, tmp_path, git, bare_repo_factory
):
    ws, _ = started
    elsewhere = bare_repo_factory("elsewhere")
    git("remote", "set-url", "origin", str(elsewhere), cwd=ws.session_repo)
    with pytest.raises(GitError) as caught:
        await shutdown_repos(ws, git=LOCAL_GIT, session_id=SESSION)
    saved = caught.value.details["repos"]["session_repo"]
    assert saved["error"]["code"] == "unsafe_repository" and saved["pushed"] is False
    assert "work.txt" not in git("--git-dir", str(elsewhere), "ls-tree", "-r", "main")
    assert (ws.session_repo / "work.txt").exists()  # kept for a later end


@pytest.mark.parametrize("kind", ["symlink", "gitfile", "commondir"])
async def test_a_git_folder_that_is_not_the_repositorys_own_is_refused(
    started, tmp_path, git, bare_repo_factory, kind
):
    ws, _ = started
    victim = tmp_path / "victim"
    git("clone", "--quiet", str(bare_repo_factory("victim")), str(victim))
    git_dir = ws.session_repo / ".git"
    if kind == "commondir":
        (git_dir / "commondir").write_text(f"{victim}/.git\n")
    else:
        os.rename(git_dir, tmp_path / "own-git")
        if kind == "symlink":
            git_dir.symlink_to(victim / ".git")
        else:
            git_dir.write_text(f"gitdir: {victim}/.git\n")
    victim_head = git("rev-parse", "HEAD", cwd=victim)

    with pytest.raises(GitError) as caught:
        await shutdown_repos(ws, git=LOCAL_GIT, session_id=SESSION)
    saved = caught.value.details["repos"]["session_repo"]
    assert saved["error"]["code"] == UnsafeRepository.code and saved["committed"] is None
    assert git("rev-parse", "HEAD", cwd=victim) == victim_head
    assert git("status", "--porcelain", cwd=victim) == ""


async def test_alternates_are_dropped_so_no_foreign_objects_leave(started, tmp_path, git):
    ws, _ = started
    alternates = ws.session_repo / ".git" / "objects" / "info" / "alternates"
    alternates.parent.mkdir(parents=True, exist_ok=True)
    alternates.write_text(f"{tmp_path}/remotes/session.git/objects\n")
    outcome = await shutdown_repos(ws, git=LOCAL_GIT, session_id=SESSION)
    assert not alternates.exists()
    assert outcome["repos"]["session_repo"]["push"] == "direct"


async def test_git_never_sees_the_harness_secrets(monkeypatch, tmp_path):
    monkeypatch.setenv("VWM_SESSION_TOKEN", "token-xyz")
    monkeypatch.setenv("VWM_PROVIDER_API_KEY", "sk-provider")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant")
    monkeypatch.setenv("GIT_DIR", str(tmp_path))  # inherited git variables do not steer it either
    shown = await gitops.run_git("-c", "alias.showenv=!env", "showenv", cwd=tmp_path)
    env = dict(line.split("=", 1) for line in shown.stdout.splitlines() if "=" in line)
    assert not {"VWM_SESSION_TOKEN", "VWM_PROVIDER_API_KEY", "ANTHROPIC_API_KEY"} & set(env)
    assert "token-xyz" not in shown.stdout and "sk-" not in shown.stdout
    assert env["GIT_CONFIG_GLOBAL"] == os.devnull and env["GIT_CONFIG_NOSYSTEM"] == "1"
    assert "file" not in env["GIT_ALLOW_PROTOCOL"].split(":")


async def test_the_sanitized_config_keeps_what_git_needs(started, git):
    ws, _ = started
    with (ws.session_repo / ".git" / "config").open("a") as config:
        config.write('[branch "feature.x"]\n\tremote = origin\n\tmerge = refs/heads/feature.x\n')
        config.write('[core]\n\tfsmonitor = "a \\"quoted\\" value"\n')
    dropped = sanitize_repository(ws.session_repo, allow_local=True)
    assert dropped == ["core.fsmonitor"]
    assert git("config", "branch.feature.x.merge", cwd=ws.session_repo) == "refs/heads/feature.x"
    assert git("config", "remote.origin.url", cwd=ws.session_repo).endswith("session.git")
    assert sanitize_repository(ws.session_repo, allow_local=True) == []  # stable


@pytest.mark.parametrize(
    "url",
    ["/srv/repo.git", "./repo", "../repo", "repo", "~/repo", "file:///srv/repo.git",
     "FILE:///srv/repo.git", "file://localhost/srv/repo.git", "./host:path", "/abs/host:path"],
)  # fmt: skip
async def test_local_urls_are_refused_unless_allowed(url, tmp_path):
    from harness.errors import RepoUrlNotAllowed

    with pytest.raises(RepoUrlNotAllowed):
        gitops.check_url(url, allow_local=False)
    gitops.check_url(url, allow_local=True)


@pytest.mark.parametrize(
    "url",
    ["https://github.com/acme/app.git", "HTTPS://github.com/acme/app", "ssh://git@host/x.git",
     "git@github.com:acme/app.git", "host:path/repo", "git://host/repo", "https://u:t@h/r.git"],
)  # fmt: skip
async def test_network_urls_are_accepted(url):
    gitops.check_url(url, allow_local=False)


@pytest.mark.parametrize(
    "url", ["ext::sh -c x", "fd::0", "foo::bar", "ftp://host/repo", "rsync://h/r", "gopher://x"]
)
async def test_other_transports_are_refused_always(url):
    from harness.errors import RepoUrlNotAllowed

    for allow_local in (False, True):
        with pytest.raises(RepoUrlNotAllowed):
            gitops.check_url(url, allow_local=allow_local)


async def test_bootstrap_refuses_a_local_session_repo_before_cloning_anything(
    tmp_path, bare_repo_factory
):
    from harness.errors import RepoUrlNotAllowed

    ws = Workspace(tmp_path / "ws")
    request = BootstrapRequest.model_validate(
        {
            "worker_repo": {"url": "https://example.invalid/knowledge.git"},
            "session_repo": {"url": str(bare_repo_factory("session"))},
        }
    )
    with pytest.raises(RepoUrlNotAllowed):
        await bootstrap(ws, request, "CLAUDE.md", allow_local=False)
    assert not ws.worker_repo.exists() and not ws.session_repo.exists()
