"""The data layer's error tree. Repositories, transitions and services raise these; the HTTP
edge answers with the `status` each kind states, so nothing here imports a web framework.

Each error carries a stable `code` (the one the API documents), a message for people that says
what to do next, `details` for machines, and whether trying again later can succeed.
"""

from __future__ import annotations

from typing import Any

from eventing.errors import CONFLICT, NOT_FOUND
from functions.errors import FunctionsError


class DbError(FunctionsError):
    """Base of every error the data layer reports (a 500 unless a kind says otherwise)."""


class NotFoundError(DbError):
    code = NOT_FOUND
    status = 404

    def __init__(self, kind: str, key: str) -> None:
        super().__init__(f"no {kind} {key!r}; check the name or id", kind=kind, key=key)


class InvalidCursor(DbError):
    code = "invalid_cursor"
    status = 400

    def __init__(self, cursor: str) -> None:
        super().__init__(
            "the pagination cursor is not one this API issued; start again without it",
            cursor=cursor,
        )


class ConflictError(DbError):
    """The request is well formed but clashes with the current state; `code` says how."""

    code = CONFLICT
    status = 409

    def __init__(self, message: str, *, code: str | None = None, **details: Any) -> None:
        super().__init__(message, **details)
        if code is not None:
            self.code = code


class NameTaken(ConflictError):
    code = "name_taken"

    def __init__(self, kind: str, name: str) -> None:
        super().__init__(
            f"a {kind} named {name!r} already exists; pick another name", kind=kind, name=name
        )


class InUse(ConflictError):
    code = "in_use"

    def __init__(self, kind: str, name: str, used_by: str) -> None:
        super().__init__(
            f"{kind} {name!r} is still used by {used_by}; remove those first",
            kind=kind,
            name=name,
            used_by=used_by,
        )


class InvalidTransition(ConflictError):
    code = "invalid_transition"

    def __init__(self, kind: str, row_id: str, from_status: str, to_status: str) -> None:
        from_status, to_status = str(from_status), str(to_status)  # plain text, not enum members
        super().__init__(
            f"{kind} {row_id} cannot go from {from_status!r} to {to_status!r}",
            kind=kind,
            id=row_id,
            from_status=from_status,
            to_status=to_status,
        )
        self.from_status = from_status
        self.to_status = to_status


class SessionBusy(ConflictError):
    code = "session_busy"
    retryable = True

    def __init__(self, session_id: str, active_job_id: str | None) -> None:
        super().__init__(
            f"session {session_id} is already running a job; wait for it to finish or cancel it",
            session_id=session_id,
            active_job_id=active_job_id,
        )


class SessionEnded(ConflictError):
    code = "session_ended"

    def __init__(self, session_id: str, status: str) -> None:
        status = str(status)
        super().__init__(
            f"session {session_id} is {status} and takes no prompts; start a new session",
            session_id=session_id,
            status=status,
        )


class IdempotencyKeyReused(ConflictError):
    code = "idempotency_key_reused"

    def __init__(self, session_id: str, idempotency_key: str, job_id: str) -> None:
        super().__init__(
            f"idempotency key {idempotency_key!r} was already used on session {session_id} for a "
            "different prompt; use a fresh key for a new prompt",
            session_id=session_id,
            idempotency_key=idempotency_key,
            job_id=job_id,
        )


class VersionMismatch(ConflictError):
    code = "version_mismatch"

    def __init__(self, key: str, expected: int, actual: int | None) -> None:
        super().__init__(
            f"setting {key!r} is at version {actual}, not {expected}; read it again and retry",
            key=key,
            expected=expected,
            actual=actual,
        )
