"""Committing what a learning job recorded in the worker's knowledge repository, with provenance.

Called by the HTTP layer (``POST /v1/learning/commit``) when a session of a worker with
auto-learning ends: the control plane has run a learning job that left notes under
``worker_repo/knowledge/``, and asks for them to be committed and pushed before it ends the
session (whose shutdown saves both repositories, `harness.transcript`).

Everything that changed in ``worker_repo/`` becomes one commit whose message says where it came
from: a subject naming the session, the job's summary, and git trailers (`TRAILERS`) naming the
session, the job, the worker and the versions in play, so ``git log`` answers "which session
taught this, under which instructions".

- ``direct``: the commit goes on the checked-out branch and is pushed as the shutdown pushes
  (`harness.saving`: rebased when the remote moved on, to ``learning/<session id>`` when that
  conflicts).
- ``review``: the commit goes on a branch of its own made from HEAD, pushed as
  ``learning/<session id>`` (with the commit's digits appended when a first end took that name);
  the repository then returns to its branch, whose tree no longer holds the notes, so the
  shutdown pushes none of them to the worker's branch. A failure after the switch still returns.

The repository is made safe and its origin checked (`harness.saving.make_safe`) before any other
git command. Failures before the commit are errors; after it, the commit is ``recorded`` and the
outcome's `error` says what went wrong with the push.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import ConfigDict, Field, field_validator

from eventing.harness_api import LearningCommitOutcome
from eventing.lazy_models import LazyModel
from harness import gitops
from harness.errors import Conflict, GitError, PushRejected
from harness.saving import SaveOutcome, SavePlan, make_safe, push_branch, push_to_free_branch
from harness.settings import GitSettings
from harness.workspace import Workspace

logger = logging.getLogger(__name__)

BRANCH_PREFIX = "learning/"
SUMMARY_BYTES = 4096  # of the summary in the commit message: its end, where it says what it did
MAX_FILES_LISTED = 1000
_MAX_SUMMARY_BYTES = 64 << 10
_MAX_VERSION = 2**53  # a JSON number every client reads exactly

TRAILERS = (
    "VWM-Session",
    "VWM-Job",
    "VWM-Worker",
    "VWM-Instructions-Version",
    "VWM-Worker-Revision",
    "VWM-Learning-Prompt-Version",
)

# A session id as the harness's settings take it (VWM_SESSION_ID), a job id as jobs take it.
_SESSION_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
_JOB_ID = r"^[A-Za-z0-9_.-]{1,64}$"
_WORKER = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
# Characters a commit message cannot hold (NUL) or a reader does not want; tab and newline stay.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
# Trailers are read only above a line that starts "---" and a space or its end (a patch's start):
# such a line of the summary is indented, so the trailers below it still count.
_DIVIDER = re.compile(r"^(?=---(?:\s|$))", re.MULTILINE)


class NoWorkerRepo(Conflict):
    code = "no_worker_repo"


class SessionMismatch(Conflict):
    code = "session_mismatch"


class LearningCommit(LazyModel):
    """The request: how to publish the notes, and where they came from."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["direct", "review"]
    session_id: str = Field(pattern=_SESSION_ID)
    job_id: str = Field(pattern=_JOB_ID)
    worker: str = Field(pattern=_WORKER)
    instructions_version: int = Field(ge=0, le=_MAX_VERSION)
    worker_revision: int = Field(ge=0, le=_MAX_VERSION)
    prompt_version: int = Field(ge=0, le=_MAX_VERSION)
    summary: str = ""

    @field_validator("summary")
    @classmethod
    def _bounded(cls, value: str) -> str:
        if len(value.encode(errors="surrogatepass")) > _MAX_SUMMARY_BYTES:
            raise ValueError(f"must be at most {_MAX_SUMMARY_BYTES} bytes (UTF-8)")
        return value


@dataclass(frozen=True)
class _Head:
    """Where HEAD was before the review branch: a branch (with or without commits), or a
    detached commit."""

    branch: str | None
    sha: str | None


async def commit_learning(
    ws: Workspace, request: LearningCommit, *, git: GitSettings, session_id: str
) -> LearningCommitOutcome:
    """Commit and push what changed in ``worker_repo/`` (see the module's docstring).

    Raises SessionMismatch when `request` names another session than this harness's,
    NoWorkerRepo when the workspace has no clone of a worker repository, BadRequest when the
    session id cannot name a branch, UnsafeRepository when the repository's ``.git`` or origin
    was tampered with, GitError when committing fails."""
    if request.session_id != session_id:
        raise SessionMismatch(
            f"this harness runs session {session_id!r}, not {request.session_id!r}: send the "
            "learning commit to the session's own harness",
            session_id=session_id,
        )
    plan = _plan(ws, request, git)
    await gitops.check_branch_name(plan.fallback_branch)
    origin = await make_safe(plan, SaveOutcome())
    if not await _has_changes(plan.repo):
        logger.info("nothing learned to record", extra={"session_id": session_id})
        return LearningCommitOutcome(status="nothing")
    if request.mode == "direct":
        outcome = await _commit_direct(plan, origin)
    else:
        outcome = await _commit_for_review(plan, origin)
    logger.info(
        "learning recorded",
        extra={
            "mode": request.mode,
            "commit": outcome.commit,
            "branch": outcome.branch,
            "push": outcome.push,
            "files": len(outcome.files_changed),
            "error": (outcome.error or {}).get("code"),
        },
    )
    return outcome


def commit_message(request: LearningCommit) -> str:
    """Subject, the summary (cleaned, its last `SUMMARY_BYTES`), then the trailers as the final
    paragraph."""
    values = (
        request.session_id,
        request.job_id,
        request.worker,
        request.instructions_version,
        request.worker_revision,
        request.prompt_version,
    )
    trailers = "\n".join(f"{key}: {value}" for key, value in zip(TRAILERS, values, strict=True))
    body = _summary_body(request.summary)
    parts = [f"Learning from session {request.session_id}", *([body] if body else []), trailers]
    return "\n\n".join(parts) + "\n"


def _summary_body(summary: str) -> str:
    text = _CONTROL.sub("", summary.replace("\r\n", "\n").replace("\r", "\n")).strip()
    text = _DIVIDER.sub(" ", text)
    data = text.encode(errors="replace")
    if len(data) <= SUMMARY_BYTES:
        return text
    tail = data[-SUMMARY_BYTES:].decode(errors="ignore")  # a character cut in two is dropped
    return "[…] " + tail.lstrip()


def _plan(ws: Workspace, request: LearningCommit, git: GitSettings) -> SavePlan:
    cloned = (ws.load_state().get("bootstrap") or {}).get("worker_repo") or {}
    git_dir = ws.worker_repo / ".git"
    if not cloned.get("url") or not (git_dir.exists() or git_dir.is_symlink()):
        raise NoWorkerRepo(
            "this session's workspace has no worker_repo/ clone (its worker has no knowledge "
            "repository, or the session was not bootstrapped with one): there is nowhere to "
            "record what it learned"
        )
    return SavePlan(
        label="worker_repo",
        repo=ws.worker_repo,
        cloned_from=cloned["url"],
        fallback_branch=f"{BRANCH_PREFIX}{request.session_id}",
        allow_local=git.allow_local,
        message=commit_message(request),
    )


async def _has_changes(repo: Path) -> bool:
    status = await gitops.run_git("status", "--porcelain", "-z", cwd=repo)
    return bool(status.stdout)


async def _files_changed(repo: Path, commit: str) -> list[str]:
    listing = await gitops.run_git(
        "diff-tree", "--no-commit-id", "--name-only", "-r", "-z", "--root", commit, cwd=repo
    )
    return sorted(name for name in listing.stdout.split("\0") if name)[:MAX_FILES_LISTED]


async def _commit_direct(plan: SavePlan, origin: str | None) -> LearningCommitOutcome:
    commit = await gitops.commit_all(plan.repo, plan.message)
    if commit is None:  # changes git does not commit (an empty nested repository)
        return LearningCommitOutcome(status="nothing")
    files = await _files_changed(plan.repo, commit)
    pushed = SaveOutcome()
    error = None
    try:
        _require_origin(origin)
        await push_branch(plan, pushed)
    except GitError as exc:
        error = exc.to_dict()
    return LearningCommitOutcome(
        status="recorded",
        commit=await gitops.head_sha(plan.repo) or commit,  # after a rebase: the rebased one
        branch=pushed.branch,
        pushed=pushed.pushed,
        push=pushed.push,
        files_changed=files,
        error=error,
    )


async def _commit_for_review(plan: SavePlan, origin: str | None) -> LearningCommitOutcome:
    head = _Head(await gitops.current_branch(plan.repo), await gitops.head_sha(plan.repo))
    local = await _free_local_branch(plan.repo, plan.fallback_branch)
    await gitops.run_git("checkout", "--quiet", "-b", local, cwd=plan.repo)
    try:
        commit = await gitops.commit_all(plan.repo, plan.message)
    except BaseException:
        await _return_to(plan.repo, head, local, committed=False)
        raise
    if commit is None:
        await _return_to(plan.repo, head, local, committed=False)
        return LearningCommitOutcome(status="nothing")
    files: list[str] = []
    branch, error = None, None
    try:
        files = await _files_changed(plan.repo, commit)
        branch = await _push_for_review(plan, origin, local)
    except GitError as exc:
        error = exc.to_dict()
    try:
        await _return_to(plan.repo, head, local, committed=True)
    except GitError as exc:
        error = error or exc.to_dict()
    return LearningCommitOutcome(
        status="recorded",
        commit=commit,
        branch=branch,
        pushed=branch is not None,
        push="direct" if branch is not None else "none",
        files_changed=files,
        error=error,
    )


async def _push_for_review(plan: SavePlan, origin: str | None, local: str) -> str:
    _require_origin(origin)
    branch = await push_to_free_branch(plan, local, plan.fallback_branch)
    if branch is None:
        raise PushRejected(
            f"{plan.fallback_branch!r} and that name with the commit's digits appended are both "
            "taken on the worker repository's remote; the commit is kept in the workspace on "
            f"the branch {local!r}",
            repo=plan.label,
            branch=plan.fallback_branch,
        )
    return branch


def _require_origin(origin: str | None) -> None:
    if origin is None:
        raise GitError(
            "worker_repo has no origin remote any more (it was removed in the workspace), so "
            "the commit is kept in the workspace only",
            repo="worker_repo",
        )


async def _free_local_branch(repo: Path, name: str) -> str:
    """`name`, or `name` with the first free number appended when an earlier end made it."""
    for candidate in (name, *(f"{name}-{number}" for number in range(2, 100))):
        found = await gitops.run_git(
            "rev-parse", "--verify", "--quiet", f"refs/heads/{candidate}", cwd=repo, check=False
        )
        if found.exit_code != 0:
            return candidate
    raise Conflict(
        f"worker_repo already has 99 branches named {name}-N; remove some and try again",
        branch=name,
    )


async def _return_to(repo: Path, head: _Head, local: str, *, committed: bool) -> None:
    """Put HEAD back where `head` was. Before a commit the review branch still points at that
    same commit, so only HEAD moves (index and tree stay) and the empty branch goes; after it,
    the tree is clean and checking the original out takes the notes out of it."""
    if not committed:
        if head.branch is not None:
            await gitops.run_git("symbolic-ref", "HEAD", f"refs/heads/{head.branch}", cwd=repo)
        elif head.sha is not None:
            await gitops.run_git("update-ref", "--no-deref", "HEAD", head.sha, cwd=repo)
        if head.sha is not None:  # on a branch without commits, the review branch has no ref
            await gitops.run_git("branch", "--quiet", "-D", local, cwd=repo)
        return
    if head.branch is None:
        assert head.sha is not None  # a detached HEAD always names a commit
        await gitops.run_git("checkout", "--quiet", "--detach", head.sha, cwd=repo)
    elif head.sha is None:  # the branch has no commit yet: an empty tree, HEAD on it again
        await gitops.run_git("switch", "--quiet", "--orphan", head.branch, cwd=repo)
    else:
        await gitops.run_git("checkout", "--quiet", head.branch, "--", cwd=repo)
