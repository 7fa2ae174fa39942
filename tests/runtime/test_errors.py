"""Runtime errors say whether to retry and carry a stable code the HTTP edge can report."""

from __future__ import annotations

import pytest

from functions.runtime import (
    HarnessMissing,
    HarnessNotReady,
    HarnessStartFailed,
    InvalidHarnessSpec,
    RuntimeBackendError,
    SessionExists,
    TeardownFailed,
)


@pytest.mark.parametrize(
    ("error", "code", "retryable"),
    [
        (InvalidHarnessSpec("m", session_id="s"), "invalid_harness_spec", False),
        (SessionExists("m", session_id="s"), "session_exists", False),
        (HarnessMissing("m", session_id="s"), "harness_missing", False),
        (HarnessStartFailed("m", session_id="s", log_tail="t"), "harness_start_failed", False),
        (HarnessNotReady("m", session_id="s"), "harness_not_ready", True),
        (TeardownFailed("m", session_id="s"), "teardown_failed", True),
    ],
)
def test_each_error_has_a_code_and_says_whether_to_retry(
    error: RuntimeBackendError, code: str, retryable: bool
) -> None:
    assert isinstance(error, RuntimeBackendError)
    assert (error.code, error.retryable, error.session_id) == (code, retryable, "s")


def test_a_start_failure_caused_by_a_taken_port_may_be_retried() -> None:
    error = HarnessStartFailed(
        "exited", session_id="s", log_tail="[Errno 98] address already in use", retryable=True
    )

    assert error.retryable
    assert "address already in use" in str(error)
