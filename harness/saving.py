"""Saving one workspace repository at session end: commit, then a push that never strands work.

Called by `harness.transcript.shutdown_repos` for ``session_repo`` and ``worker_repo``. The
repository is first made safe for git (`harness.git_room.sanitize_repository`) and its origin
checked against the URL it was cloned from, so the harness pushes only where bootstrap cloned
from, with nothing of the workspace's choosing run on the way.

When the remote branch moved on while the session worked (another session on the same repository
and branch ended first), the push is rejected. Then the session's commits are rebased on the new
remote head and pushed again; if they conflict, they go to a branch of their own,
``<fallback_prefix><session id>``, so the work always leaves the volume. The outcome says which
(`push`: ``direct``, ``rebased``, ``fallback_branch``, or ``none`` when nothing was pushed).

`harness.learning` commits a learning job's notes in ``worker_repo`` with the same steps: it makes
the repository safe (`make_safe`), pushes its branch (`push_branch`), or pushes a branch of its own
(`push_to_free_branch`).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from harness import git_room, gitops
from harness.errors import GitError, PushRejected, UnsafeRepository

logger = logging.getLogger(__name__)

_PUSH_ATTEMPTS = 3  # each a fetch, a rebase and a push: more only if others keep pushing too

PushMode = Literal["direct", "rebased", "fallback_branch", "none"]


@dataclass
class SaveOutcome:
    committed: str | None = None  # the commit made at session end, None if the tree was clean
    pushed: bool = False
    push: PushMode = "none"
    branch: str | None = None  # the remote branch the work is on
    head: str | None = None  # the commit pushed (after a rebase: the rebased one)
    dropped_config: list[str] = field(default_factory=list)
    error: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SavePlan:
    label: str  # "session_repo" or "worker_repo", for messages
    repo: Path
    cloned_from: str | None  # the (masked) URL bootstrap cloned from; None: no remote wanted
    fallback_branch: str
    allow_local: bool
    message: str


async def save_repository(plan: SavePlan) -> SaveOutcome:
    """Commit everything and push it; failures are recorded in the outcome, never raised."""
    outcome = SaveOutcome()
    try:
        origin = await make_safe(plan, outcome)
        outcome.committed = await gitops.commit_all(plan.repo, plan.message)
        if origin is not None:
            await push_branch(plan, outcome)
    except GitError as exc:
        outcome.error = exc.to_dict()
        logger.warning(
            "saving a repository failed", extra={"repo": plan.label, "error": exc.message}
        )
    else:
        logger.info(
            "repository saved",
            extra={"repo": plan.label, "push": outcome.push, "branch": outcome.branch},
        )
    return outcome


async def make_safe(plan: SavePlan, outcome: SaveOutcome) -> str | None:
    """Make the repository safe for git (its dropped configuration recorded in `outcome`) and
    check its origin is where bootstrap cloned it from; returns the origin's URL, None when it
    has no remote. Run before any other git command on the repository. Raises UnsafeRepository."""
    outcome.dropped_config = await asyncio.to_thread(
        git_room.sanitize_repository, plan.repo, allow_local=plan.allow_local
    )
    origin = await gitops.remote_url(plan.repo)
    await _check_origin(plan, origin)
    return origin


async def _check_origin(plan: SavePlan, origin: str | None) -> None:
    if origin is None:
        return
    if plan.cloned_from is None:
        raise UnsafeRepository(
            f"{plan.label} was created empty but now has an origin remote "
            f"({gitops.mask_credentials(origin)}) added in the workspace; its work is committed "
            "locally and not pushed",
            repo=plan.label,
        )
    if not await gitops.is_clone_of(plan.repo, plan.cloned_from):
        raise UnsafeRepository(
            f"the origin of {plan.label} was changed in the workspace to "
            f"{gitops.mask_credentials(origin)} (cloned from {plan.cloned_from}); its work is "
            "committed locally and not pushed",
            repo=plan.label,
        )


async def push_branch(plan: SavePlan, outcome: SaveOutcome) -> None:
    """Push the checked-out branch to origin, rebased on the remote's when it moved on, or to a
    branch of its own (`plan.fallback_branch`) when the rebase conflicts; `outcome` says which.
    Raises GitError (PushRejected when the remote refused or could not be reached)."""
    branch = await gitops.current_branch(plan.repo)
    if branch is None:
        raise GitError(
            f"{plan.label} has a detached HEAD, so there is no branch to push; the commit is "
            "kept locally: check out a branch and push it by hand",
            repo=str(plan.repo),
        )
    for attempt in range(_PUSH_ATTEMPTS):
        try:
            outcome.pushed = await gitops.push(plan.repo, branch, allow_local=plan.allow_local)
        except PushRejected as exc:
            if not exc.details.get("rejected"):
                raise  # unreachable, refused credentials...: a retry of the end may do better
        else:
            outcome.push = ("direct" if attempt == 0 else "rebased") if outcome.pushed else "none"
            outcome.branch = branch if outcome.pushed else None
            outcome.head = await gitops.head_sha(plan.repo)
            return
        upstream = await gitops.fetch_branch(plan.repo, branch, allow_local=plan.allow_local)
        if upstream is not None and not await gitops.rebase_onto(plan.repo, upstream):
            break  # conflicts: the work goes to a branch of its own
    await _push_to_fallback(plan, outcome, branch)


async def _push_to_fallback(plan: SavePlan, outcome: SaveOutcome, branch: str) -> None:
    name = await push_to_free_branch(plan, branch, plan.fallback_branch)
    if name is None:
        raise PushRejected(
            f"{plan.label}: {branch!r} moved on, the session's commits conflict with it, and the "
            f"fallback branch {plan.fallback_branch!r} is taken; the commits are kept in the "
            "workspace: end the session again after removing that branch",
            repo=plan.label,
            branch=branch,
        )
    outcome.pushed, outcome.push, outcome.branch, outcome.head = (
        True,
        "fallback_branch",
        name,
        await gitops.head_sha(plan.repo),
    )
    logger.warning(
        "branch moved on and the work conflicts: pushed to a branch of its own",
        extra={"repo": plan.label, "branch": branch, "fallback_branch": name},
    )


async def push_to_free_branch(plan: SavePlan, branch: str, name: str) -> str | None:
    """Push the checked-out `branch` to `name` on origin, or, when `name` holds other history
    there (a second end of the same session), to ``<name>-<first 12 digits of the head>``;
    returns the remote branch it went to, None when both are taken. Raises PushRejected when
    the push failed otherwise (unreachable, credentials refused)."""
    head = await gitops.head_sha(plan.repo)
    for candidate in (name, f"{name}-{(head or '')[:12]}"):
        try:
            await gitops.push(plan.repo, branch, to_branch=candidate, allow_local=plan.allow_local)
        except PushRejected as exc:
            if not exc.details.get("rejected"):
                raise
            continue
        return candidate
    return None
