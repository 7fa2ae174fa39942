"""Async wrappers around the `git` command line: clone for bootstrap, commit and push at shutdown.

Every command runs without a terminal (it can never stop to ask for a password), with a timeout
after which its whole process group is killed, and with identity given per command so the
machine's global git config is not needed. A failure raises `GitError` carrying the command (with
any credentials in URLs masked), the exit code and the tail of stderr.
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

from harness.errors import BadRequest, GitError, PushRejected

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 60.0
NETWORK_TIMEOUT_S = 600.0  # clone and push move whole repositories
_STDERR_TAIL_CHARS = 4000

# "scheme://user:token@host" -> "scheme://***@host"
_URL_CREDENTIALS = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")
# scp-like ssh syntax, "user@host:path"; anything else without a scheme is a local path.
_SCP_LIKE = re.compile(r"^[^/]+:")


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
) -> GitResult:
    """Run ``git <args>``; raise GitError when it fails (unless `check` is off) or times out."""
    command = mask_credentials(" ".join(["git", *args]))
    try:
        process = await asyncio.create_subprocess_exec(
            "git",
            *args,
            cwd=cwd,
            env=_git_env(),
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


async def clone(
    url: str, branch: str, dest: Path, *, timeout_s: float = NETWORK_TIMEOUT_S
) -> CloneResult:
    """Clone `url` into `dest` with `branch` checked out; creates the branch locally if the
    remote has none of that name (an empty repository, or a new task branch)."""
    await check_branch_name(branch)
    try:
        listing = await run_git("ls-remote", "--heads", "--", url, timeout_s=timeout_s)
        exists = f"refs/heads/{branch}" in _listed_refs(listing.stdout)
        clone_args = [f"--branch={branch}"] if exists else []
        await run_git("clone", *clone_args, "--", url, str(dest), timeout_s=timeout_s)
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


async def init(dest: Path, branch: str = "main") -> None:
    """An empty repository with no remote (a session without a session repo still needs one)."""
    await check_branch_name(branch)
    await run_git("init", "--quiet", f"--initial-branch={branch}", str(dest))


async def check_branch_name(branch: str) -> None:
    """Refuse a name git would not accept as a branch, or would read as an option."""
    ok = (
        not branch.startswith("-")
        and (await run_git("check-ref-format", "--branch", branch, check=False)).exit_code == 0
    )
    if not ok:
        raise BadRequest(f"{branch!r} is not a valid git branch name", branch=branch)


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
    repo: Path, branch: str, *, remote: str = "origin", timeout_s: float = NETWORK_TIMEOUT_S
) -> bool:
    """Push local `branch` to the same name on `remote` (never forced). False when the branch has
    no commits yet, so there is nothing to push. PushRejected says why it failed and what next."""
    await check_branch_name(branch)
    has_commits = await run_git(
        "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}", cwd=repo, check=False
    )
    if has_commits.exit_code != 0:
        return False
    ref = f"refs/heads/{branch}"
    try:
        await run_git("push", remote, f"{ref}:{ref}", cwd=repo, timeout_s=timeout_s)
    except GitError as exc:
        stderr = exc.details.get("stderr", "")
        raise PushRejected(
            _push_advice(repo, branch, stderr, timed_out=bool(exc.details.get("timed_out"))),
            repo=str(repo),
            branch=branch,
            **exc.details,
        ) from None
    return True


def _push_advice(repo: Path, branch: str, stderr: str, *, timed_out: bool) -> str:
    kept = f"the local commits are kept in {repo}"
    if "non-fast-forward" in stderr or "fetch first" in stderr or "[rejected]" in stderr:
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


def _git_env() -> dict[str, str]:
    env = dict(os.environ)
    env["GIT_TERMINAL_PROMPT"] = "0"  # fail instead of waiting for a password nobody will type
    env["LC_ALL"] = "C"  # messages in English, so _push_advice can read them
    # ext:: and other transports run programs; a request must not pick them.
    env.setdefault("GIT_ALLOW_PROTOCOL", "file:git:http:https:ssh")
    env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
    return env


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
