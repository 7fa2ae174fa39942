"""The error tree of the VWM SDK and command line.

Every failure a caller can see is a `VWMError` carrying the HTTP status, the control plane's stable
error code, its message and details. `error_for` maps an error answer of the API
(``{"error": {"code", "message", "details"}}``) to the most specific class; `retryable` says
whether trying the same call again later can succeed.
"""

from __future__ import annotations

from typing import Any


class VWMError(Exception):
    """Base of every error the SDK raises."""

    retryable = False
    default_code = "error"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code or self.default_code
        self.details = details or {}

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status!r}, code={self.code!r}, message={self.message!r})"


class AuthError(VWMError):
    """401 or 403: the API key is missing, unknown, or its scope does not allow the call."""

    default_code = "unauthorized"


class NotFoundError(VWMError):
    """404: no such runtime, worker, session or job."""

    default_code = "not_found"


class ConflictError(VWMError):
    """409: the resource is not in a state that allows the call (``session_ended``, ``name_taken``)."""

    default_code = "conflict"


class SessionBusyError(ConflictError):
    """409 ``session_busy``: the session is running a job; wait for it or cancel it."""

    default_code = "session_busy"


class ValidationError(VWMError):
    """400 or 422: the request was malformed; ``details`` says which field."""

    default_code = "invalid_request"


class ServerError(VWMError):
    """5xx: the control plane or the session's harness failed; the same call may work later."""

    retryable = True
    default_code = "internal"


class UnreachableError(VWMError):
    """The control plane could not be reached (connection refused, DNS, timeout, dropped)."""

    retryable = True
    default_code = "unreachable"


class StreamInterruptedError(UnreachableError):
    """An event stream broke and could not be resumed. The job may still be running."""

    default_code = "stream_interrupted"


class ProtocolError(VWMError):
    """The server answered something the SDK cannot read (not the documented API)."""

    default_code = "bad_response"


class ConfigError(VWMError):
    """The SDK is missing configuration, such as the API key."""

    default_code = "config"


class WaitTimeoutError(VWMError):
    """A client-side wait (`Job.wait`, `VWSession.wait_ready`) ran out of time. Nothing was stopped."""

    default_code = "wait_timeout"


class SessionFailedError(VWMError):
    """The session ended up ``failed`` while waiting for it to become ready."""

    default_code = "session_failed"


def error_for(
    status: int, code: str | None, message: str, details: dict[str, Any] | None = None
) -> VWMError:
    """The most specific `VWMError` for an error answer of the API."""
    cls: type[VWMError]
    if status in (401, 403):
        cls = AuthError
    elif status == 404:
        cls = NotFoundError
    elif status == 409:
        cls = SessionBusyError if code == "session_busy" else ConflictError
    elif status in (400, 422):
        cls = ValidationError
    elif status >= 500:
        cls = ServerError
    else:
        cls = VWMError
    if not code:
        code = f"http_{status}" if cls is VWMError else cls.default_code
    return cls(message, status=status, code=code, details=details)
