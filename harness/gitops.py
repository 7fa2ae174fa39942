"""Async wrappers around the `git` command line: clone for bootstrap, commit and push at shutdown.

Every command runs in the clean room of `harness.git_room` (a minimal environment, no global
config, nothing from the repository that runs a program), without a terminal (it can never stop
to ask for a password), with a timeout after which its whole process group is killed, and with
identity given per command. A failure raises `GitError` carrying the command (with any
credentials in URLs masked), the exit code and the tail of stderr.

`allow_local` says whether local paths and ``file://`` URLs may be cloned and pushed to; the
control plane allows them only where its policy does (the embedded default).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
from dataclasses import dataclass
from pathlib import Path

from harness.errors import BadRequest, GitError, PushRejected, RepoUrlNotAllowed
from harness.git_room import clean_environment

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 60.0
NETWORK_TIMEOUT_S = 600.0  # clone and push move whole repositories
_STDERR_TAIL_CHARS = 4000
# What `git clone --branch=X` says when the remote has no branch X (LC_ALL=C, git_room).
_MISSING_BRANCH = "Remote branch {branch} not found in upstream origin"

# "scheme://user:token@host" -> "scheme://***@host"
_URL_CREDENTIALS = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")
# scp-like ssh syntax, "user@host:path"; anything else without a scheme is a local path.
_SCP_LIKE = re.compile(r"^[^/]+:")
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
_NETWORK_SCHEMES = frozenset({"https", "http", "ssh", "git"})
# Branch names every git accepts: words of letters, digits and "_" joined by single "-" or "/"
# ("main", "feature/task-7"); none of what git refuses (".", "..", "@{", "//", ".lock", a
# leading "-") fits. Only "HEAD" fits and is refused.
_PLAIN_BRANCH = re.compile(r"[A-Za-z0-9_]+(?:[-/][A-Za-z0-9_]+)*")


@dataclass(frozen=True)
class GitResult:
    exit_code: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class CloneResult:
    branch: str
    created_branch: bool  # the remote had no such branch: it was created locally, not yet pushed
    head: str | None  # None while the branch has no commits (an empty remote)


def mask_credentials(text: str) -> str:
    return _URL_CREDENTIALS.sub(r"\1***@", text)


async def run_git(
    *args: str,
    cwd: Path | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    check: bool = True,
    allow_local: bool = False,
) -> GitResult:
    """Run ``git <args>``; raise GitError when it fails (unless `check` is off) or times out."""
    command = mask_credentials(" ".join(["git", *args]))
    try:
        process = await asyncio.create_subprocess_exec(
            "git",
            *args,
            cwd=cwd,
            env=clean_environment(allow_local=allow_local),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # own process group: a kill reaches ssh and remote helpers
        )
    except OSError as exc:  # no git binary, or cwd does not exist
        raise GitError(
            f"cannot run `{command}`: {exc}", command=command, exit_code=None, stderr=""
        ) from None
    try:
        async with asyncio.timeout(timeout_s):
            out, err = await process.communicate()
    except TimeoutError:
        await _kill(process)
        raise GitError(
            f"`{command}` took longer than {timeout_s:g} s and was stopped; "
            "is the remote reachable?",
            command=command,
            exit_code=None,
            stderr="",
            timed_out=True,
        ) from None
    except BaseException:  # cancelled: never leave git running on its own
        await _kill(process)
        raise
    result = GitResult(
        exit_code=process.returncode if process.returncode is not None else -1,
        stdout=out.decode(errors="replace"),
        stderr=mask_credentials(err.decode(errors="replace"))[-_STDERR_TAIL_CHARS:],
    )
    if check and result.exit_code != 0:
        raise GitError(
            f"`{command}` failed: {_summary(result.stderr) or f'exit code {result.exit_code}'}",
            command=command,
            exit_code=result.exit_code,
            stderr=result.stderr,
        )
    return result


def check_url(url: str, *, allow_local: bool) -> None:
    """Refuse a URL whose transport the harness does not use. Git reads ``a::b`` as a remote
    helper (``ext::`` runs a program), a path or ``file://`` as a repository on this machine."""
    if "::" in url.split("/", 1)[0]:
        raise _url_refused(url, "remote helpers (transport::address) are not allowed")
    scheme = _SCHEME.match(url)
    if scheme is not None:
        name = scheme.group(1).lower()
        if name in _NETWORK_SCHEMES or (name == "file" and allow_local):
            return
        raise _url_refused(url, f"the {name}:// transport is not allowed")
    if _SCP_LIKE.match(url):
        return  # user@host:path, ssh
    if not allow_local:
        raise _url_refused(url, "local paths are not allowed")


def _url_refused(url: str, why: str) -> RepoUrlNotAllowed:
    return RepoUrlNotAllowed(
        f"repository {mask_credentials(url)!r} is refused: {why}; use an https://, ssh:// or "
        "git:// URL (local repositories only where the control plane's policy allows them)",
        url=mask_credentials(url),
    )


async def clone(
    url: str,
    branch: str,
    dest: Path,
    *,
    allow_local: bool = False,
    timeout_s: float = NETWORK_TIMEOUT_S,
) -> CloneResult:
    """Clone `url` into `dest` with `branch` checked out; creates the branch locally if the
    remote has none of that name (an empty repository, or a new task branch)."""
    check_url(url, allow_local=allow_local)
    await check_branch_name(branch)
    # The branch is asked for in the clone itself rather than looked up first (`ls-remote`):
    # the usual case, a branch that exists, then costs one trip to the remote, not two. Git
    # removes what a failed clone made, so a missing branch is cloned again without one.
    exists = True
    try:
        try:
            await _clone(url, dest, [f"--branch={branch}"], timeout_s, allow_local)
        except GitError as exc:
            if _MISSING_BRANCH.format(branch=branch) not in exc.details.get("stderr", ""):
                raise
            exists = False
            await _clone(url, dest, [], timeout_s, allow_local)
    except GitError as exc:
        stderr = exc.details.get("stderr", "")
        raise GitError(
            f"cannot clone {mask_credentials(url)}: {_summary(stderr) or exc.message}; "
            "check the URL, that the repository exists and that the credentials allow reading it",
            url=mask_credentials(url),
            **exc.details,
        ) from None
    if not exists:
        if await head_sha(dest) is None:
            # Nothing to branch from: point the unborn HEAD at the wanted name.
            await run_git("symbolic-ref", "HEAD", f"refs/heads/{branch}", cwd=dest)
        else:
            await run_git("checkout", "-b", branch, cwd=dest)
    return CloneResult(branch=branch, created_branch=not exists, head=await head_sha(dest))


async def _clone(
    url: str, dest: Path, options: list[str], timeout_s: float, allow_local: bool
) -> None:
    # --no-local: a local source is copied, never hard-linked into the workspace.
    # --template=: no sample hooks copied in (the harness's git reads no global configuration,
    # so there is no configured template to honour either).
    await run_git(
        "clone",
        "--no-local",
        "--template=",
        *options,
        "--",
        url,
        str(dest),
        timeout_s=timeout_s,
        allow_local=allow_local,
    )


async def init(dest: Path, branch: str = "main") -> None:
    """An empty repository with no remote (a session without a session repo still needs one)."""
    await check_branch_name(branch)
    await run_git("init", "--quiet", f"--initial-branch={branch}", str(dest))


async def check_branch_name(branch: str) -> None:
    """Refuse a name git would not accept as a branch, or would read as an option. A plain name
    (`_PLAIN_BRANCH`) is accepted without asking git: a session's start checks two."""
    ok = is_plain_branch(branch) or (
        not branch.startswith("-")
        and (await run_git("check-ref-format", "--branch", branch, check=False)).exit_code == 0
    )
    if not ok:
        raise BadRequest(f"{branch!r} is not a valid git branch name", branch=branch)


def is_plain_branch(branch: str) -> bool:
    """Whether `branch` is a name git accepts as a branch, known without asking it."""
    return branch != "HEAD" and _PLAIN_BRANCH.fullmatch(branch) is not None


async def is_clone_of(dest: Path, url: str) -> bool:
    """Whether `dest` is a git repository whose ``origin`` is `url` (credentials and a trailing
    ``/`` or ``.git`` ignored; local paths compared resolved)."""
    if not (dest / ".git").exists():
        return False
    origin = await remote_url(dest)
    return origin is not None and _normalized_url(origin) == _normalized_url(url)


async def remote_url(repo: Path, remote: str = "origin") -> str | None:
    result = await run_git("remote", "get-url", remote, cwd=repo, check=False)
    return result.stdout.strip() if result.exit_code == 0 else None


async def head_sha(repo: Path) -> str | None:
    """The commit HEAD points to, or None on a branch with no commits yet."""
    result = await run_git(
        "rev-parse", "--verify", "--quiet", "HEAD^{commit}", cwd=repo, check=False
    )
    return result.stdout.strip() if result.exit_code == 0 else None


async def current_branch(repo: Path) -> str | None:
    """The checked-out branch (also when it has no commits yet), or None on a detached HEAD."""
    result = await run_git("symbolic-ref", "--quiet", "--short", "HEAD", cwd=repo, check=False)
    return result.stdout.strip() if result.exit_code == 0 else None


async def commit_all(
    repo: Path, message: str, author_name: str = "VWM", author_email: str = "vwm@localhost"
) -> str | None:
    """Stage every change (new, modified, deleted) and commit; the new sha, or None if clean."""
    await run_git("add", "--all", cwd=repo)
    staged = await run_git("diff", "--cached", "--quiet", cwd=repo, check=False)
    if staged.exit_code == 0:
        return None
    if staged.exit_code != 1:
        raise GitError(
            f"cannot tell whether {repo} has changes: {_summary(staged.stderr)}",
            command="git diff --cached --quiet",
            exit_code=staged.exit_code,
            stderr=staged.stderr,
        )
    await run_git(
        "-c", f"user.name={author_name}",
        "-c", f"user.email={author_email}",
        "-c", "commit.gpgsign=false",
        # --no-verify: a hook the agent left in the repo must not block saving its work.
        "commit", "--quiet", "--no-verify", "-m", message,
        cwd=repo,
    )  # fmt: skip
    return await head_sha(repo)


async def push(
    repo: Path,
    branch: str,
    *,
    to_branch: str | None = None,
    remote: str = "origin",
    allow_local: bool = False,
    timeout_s: float = NETWORK_TIMEOUT_S,
) -> bool:
    """Push local `branch` to `to_branch` (the same name by default) on `remote`, never forced.
    False when the branch has no commits yet, so there is nothing to push. PushRejected says why
    it failed and what next; its `rejected` detail is true when the remote has newer commits."""
    await check_branch_name(branch)
    target = to_branch or branch
    await check_branch_name(target)
    has_commits = await run_git(
        "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}", cwd=repo, check=False
    )
    if has_commits.exit_code != 0:
        return False
    refspec = f"refs/heads/{branch}:refs/heads/{target}"
    try:
        await run_git(
            "push", "--no-verify", remote, refspec,
            cwd=repo, timeout_s=timeout_s, allow_local=allow_local,
        )  # fmt: skip
    except GitError as exc:
        stderr = exc.details.get("stderr", "")
        raise PushRejected(
            _push_advice(repo, target, stderr, timed_out=bool(exc.details.get("timed_out"))),
            repo=str(repo),
            branch=target,
            rejected=_REJECTED.search(stderr) is not None,
            **exc.details,
        ) from None
    return True


async def fetch_branch(
    repo: Path, branch: str, *, allow_local: bool = False, timeout_s: float = NETWORK_TIMEOUT_S
) -> str | None:
    """The commit `branch` has on ``origin`` now, fetched; None if origin has no such branch."""
    await check_branch_name(branch)
    listing = await run_git(
        "ls-remote", "--heads", "origin", branch,
        cwd=repo, timeout_s=timeout_s, allow_local=allow_local,
    )  # fmt: skip
    if f"refs/heads/{branch}" not in _listed_refs(listing.stdout):
        return None
    await run_git(
        "fetch", "--quiet", "--no-tags", "origin", f"refs/heads/{branch}",
        cwd=repo, timeout_s=timeout_s, allow_local=allow_local,
    )  # fmt: skip
    return (await run_git("rev-parse", "FETCH_HEAD^{commit}", cwd=repo)).stdout.strip()


async def rebase_onto(
    repo: Path, upstream: str, author_name: str = "VWM", author_email: str = "vwm@localhost"
) -> bool:
    """Replay the checked-out branch's own commits on `upstream`. False (and the branch exactly
    as it was) when they conflict."""
    result = await run_git(
        "-c", f"user.name={author_name}",
        "-c", f"user.email={author_email}",
        "rebase", "--quiet", "--no-autostash", upstream,
        cwd=repo, check=False,
    )  # fmt: skip
    if result.exit_code == 0:
        return True
    await run_git("rebase", "--abort", cwd=repo, check=False)
    logger.info("rebase stopped on a conflict; aborted", extra={"repo": repo.name})
    return False


_REJECTED = re.compile(r"non-fast-forward|fetch first|\[rejected\]")


def _push_advice(repo: Path, branch: str, stderr: str, *, timed_out: bool) -> str:
    kept = f"the local commits are kept in {repo}"
    if _REJECTED.search(stderr):
        return (
            f"push of {branch!r} was rejected: the remote branch has commits this clone does "
            f"not have; {kept}: fetch, merge or rebase, then push again"
        )
    if timed_out or _UNREACHABLE.search(stderr):
        return f"push of {branch!r} failed: the remote is unreachable; {kept}: retry later"
    return f"push of {branch!r} failed: {_summary(stderr) or 'see stderr'}; {kept}"


_UNREACHABLE = re.compile(
    r"Could not read from remote|unable to access|does not appear to be a git repository"
    r"|Connection refused|Could not resolve host|timed out",
    re.IGNORECASE,
)


async def _kill(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        await process.communicate()


def _listed_refs(ls_remote_output: str) -> set[str]:
    return {line.split("\t", 1)[1] for line in ls_remote_output.splitlines() if "\t" in line}


def _normalized_url(url: str) -> str:
    url = mask_credentials(url.strip())
    if url.startswith("file://"):
        url = url.removeprefix("file://")
    elif "://" in url or _SCP_LIKE.match(url):
        return url.rstrip("/").removesuffix(".git").replace("://***@", "://")
    return str(Path(url).resolve())


def _summary(stderr: str) -> str:
    """The line of git's stderr that says what went wrong: the first fatal/error line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in lines:
        if line.startswith(("fatal:", "error:")):
            return line
    return lines[-1] if lines else ""
