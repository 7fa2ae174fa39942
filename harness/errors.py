"""The harness's error tree. Each error knows its HTTP status and stable code; only the HTTP edge
(`harness.http`) turns them into responses, so inner modules never import Starlette.

`HarnessError` is the one base (an `eventing.errors.VwmError`): the transport's errors
(`harness.transport.TransportError`), the adapters', the settings' and git's are all kinds of it.
Messages are for people: they say what went wrong and what to do next.
"""

from __future__ import annotations

from typing import Any

from eventing.errors import CONFLICT, JOB_EXPIRED, JOB_RUNNING, NOT_FOUND, VwmError


class HarnessError(VwmError):
    """Base of every error the harness reports to a caller (a 500 unless a kind says otherwise)."""

    def to_dict(self) -> dict[str, Any]:
        """The inside of the error body (``{"code", "message"[, "details"]}``), as jobs and
        save outcomes record it."""
        inner: dict[str, Any] = self.to_body()["error"]
        return inner


class BadRequest(HarnessError):
    status = 400
    code = "bad_request"


class Unauthorized(HarnessError):
    status = 401
    code = "unauthorized"


class Forbidden(HarnessError):
    status = 403
    code = "forbidden"


class NotFound(HarnessError):
    status = 404
    code = NOT_FOUND


class Conflict(HarnessError):
    status = 409
    code = CONFLICT


class JobAlreadyRunning(Conflict):
    code = JOB_RUNNING


class NotBootstrapped(Conflict):
    code = "not_bootstrapped"


class JobExpired(HarnessError):
    """A job start arrived after its `not_after`: its caller stopped waiting (the harness was
    stopped or slow), so the job is not run at all."""

    status = 410
    code = JOB_EXPIRED


class PathOutsideWorkspace(HarnessError):
    """A user-supplied path would leave the workspace (`..`, absolute, or a symlink pointing out)."""

    status = 400
    code = "path_outside_workspace"


class PayloadTooLarge(HarnessError):
    status = 413
    code = "payload_too_large"


class GitError(HarnessError):
    """A git command failed. `details` carries the command and its stderr tail."""

    status = 502
    code = "git_failed"


class PushRejected(GitError):
    code = "push_failed"


class UnsafeRepository(GitError):
    """A workspace repository's ``.git`` is not its own folder (a link, a gitdir file, a worktree
    of another repository), or its origin was changed: the harness runs no git on it."""

    status = 409
    code = "unsafe_repository"


class RepoUrlNotAllowed(HarnessError):
    """A repository URL names a transport the harness does not use (a local path or ``file://``
    unless local repositories are allowed, ``ext::``, ``fd::``, anything but https/ssh/git)."""

    status = 403
    code = "repo_url_not_allowed"
