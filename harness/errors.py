"""The harness's error tree. Each error knows its HTTP status and stable code; only the HTTP edge
(`harness.http_errors`) turns them into responses, so inner modules never import Starlette.

Messages are for people: they say what went wrong and what to do next.
"""

from __future__ import annotations

from typing import Any


class HarnessError(Exception):
    """Base of every error the harness reports to a caller."""

    status_code = 500
    code = "internal"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body


class BadRequest(HarnessError):
    status_code = 400
    code = "bad_request"


class Unauthorized(HarnessError):
    status_code = 401
    code = "unauthorized"


class Forbidden(HarnessError):
    status_code = 403
    code = "forbidden"


class NotFound(HarnessError):
    status_code = 404
    code = "not_found"


class Conflict(HarnessError):
    status_code = 409
    code = "conflict"


class JobAlreadyRunning(Conflict):
    code = "job_running"


class NotBootstrapped(Conflict):
    code = "not_bootstrapped"


class JobExpired(HarnessError):
    """A job start arrived after its `not_after`: its caller stopped waiting (the harness was
    stopped or slow), so the job is not run at all."""

    status_code = 410
    code = "job_expired"


class PathOutsideWorkspace(HarnessError):
    """A user-supplied path would leave the workspace (`..`, absolute, or a symlink pointing out)."""

    status_code = 400
    code = "path_outside_workspace"


class PayloadTooLarge(HarnessError):
    status_code = 413
    code = "payload_too_large"


class GitError(HarnessError):
    """A git command failed. `details` carries the command and its stderr tail."""

    status_code = 502
    code = "git_failed"


class PushRejected(GitError):
    code = "push_failed"


class UnsafeRepository(GitError):
    """A workspace repository's ``.git`` is not its own folder (a link, a gitdir file, a worktree
    of another repository), or its origin was changed: the harness runs no git on it."""

    status_code = 409
    code = "unsafe_repository"


class RepoUrlNotAllowed(HarnessError):
    """A repository URL names a transport the harness does not use (a local path or ``file://``
    unless local repositories are allowed, ``ext::``, ``fd::``, anything but https/ssh/git)."""

    status_code = 403
    code = "repo_url_not_allowed"
