"""The runtime backends' error tree. Raised by every `RuntimeBackend`; the sessions and events
functions catch it and decide from `retryable` whether to try again later or fail the session.

No web framework here: each error states its HTTP status, 503 when retryable (the same call may
succeed later) and 502 when not; the HTTP edge answers with it. Messages say what happened and
what to do next.
"""

from __future__ import annotations

from functions.errors import FunctionsError


class RuntimeBackendError(FunctionsError):
    """Base of every runtime backend error. `retryable`: the same call may succeed later;
    `code`: a stable name for the edge to report. `session_id` is an attribute, not a detail:
    the answer to a client carries no details for these."""

    retryable: bool = False
    code: str = "runtime_failed"
    status: int = 502

    def __init__(self, message: str, *, session_id: str, retryable: bool | None = None) -> None:
        super().__init__(message)
        self.session_id = session_id
        if retryable is not None:
            self.retryable = retryable
        # A backend that is down (or starting) may answer later: 503 tells a client to retry.
        self.status = 503 if self.retryable else 502


class InvalidHarnessSpec(RuntimeBackendError):
    """The spec or handle cannot be used as given (a session id unfit for a path or resource
    name, an environment variable the backend owns, a handle of another backend)."""

    code = "invalid_harness_spec"


class SessionExists(RuntimeBackendError):
    """`provision` found a workspace for this session already: use its handle, or tear it down."""

    code = "session_exists"


class HarnessMissing(RuntimeBackendError):
    """The session's workspace is gone, so there is nothing to relaunch: the session has ended."""

    code = "harness_missing"


class HarnessStartFailed(RuntimeBackendError):
    """The harness exited before it was ready. `log_tail` is the end of its log for this launch;
    `exit_code` is known when this process started it. Retryable only when the cause looks
    transient (its port was taken meanwhile): a bad setting fails the same way every time."""

    code = "harness_start_failed"

    def __init__(
        self,
        message: str,
        *,
        session_id: str,
        log_tail: str,
        exit_code: int | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(
            f"{message}\n--- harness log tail ---\n{log_tail}",
            session_id=session_id,
            retryable=retryable,
        )
        self.log_tail = log_tail
        self.exit_code = exit_code


class HarnessNotReady(RuntimeBackendError):
    """The harness is running but did not answer in time; wait longer or call `ensure_running`."""

    retryable = True
    code = "harness_not_ready"

    def __init__(self, message: str, *, session_id: str, log_tail: str = "") -> None:
        text = f"{message}\n--- harness log tail ---\n{log_tail}" if log_tail else message
        super().__init__(text, session_id=session_id)
        self.log_tail = log_tail


class TeardownFailed(RuntimeBackendError):
    """Something of the session survived a teardown (a process, files); calling it again may
    finish the job."""

    retryable = True
    code = "teardown_failed"


class TokenKeyUnavailable(RuntimeBackendError):
    """The key the harness tokens are derived from cannot be read or is too short: a
    deployment problem (fix ``VWM_TOKEN_KEY_FILE`` or the data folder), not one session's."""

    code = "token_key_unavailable"

    def __init__(self, message: str) -> None:
        super().__init__(message, session_id="")


class SandboxUnavailable(RuntimeBackendError):
    """``VWM_SANDBOX=required`` and bubblewrap does not work on this machine, so no harness may
    start: install bubblewrap, or allow unconfined agents (``VWM_SANDBOX=auto``)."""

    code = "sandbox_unavailable"
