"""The local backend runs this installation's harness as a process: a runtime's image, CPU and
memory do nothing there, and it says so once per session start (one structured warning)."""

from __future__ import annotations

import logging

import pytest

from tests.runtime.contract import Sessions


@pytest.fixture
def sessions(local_sessions: Sessions) -> Sessions:
    return local_sessions


def ignored_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        record
        for record in caplog.records
        if record.name == "functions.runtime.local" and record.levelno == logging.WARNING
    ]


async def test_a_session_start_names_the_fields_the_backend_ignores(
    sessions: Sessions, make_spec, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="functions.runtime.local")
    spec = make_spec("s-ignored", image="registry.example/vwm/harness:1", memory="4Gi")
    await sessions.ready(spec)

    (warning,) = ignored_warnings(caplog)
    assert warning.getMessage() == "runtime fields ignored by the local backend"
    assert warning.__dict__["ignored"] == ["image", "limits.memory"]
    assert warning.__dict__["session_id"] == "s-ignored"


async def test_a_session_without_them_starts_quietly(
    sessions: Sessions, make_spec, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="functions.runtime.local")
    await sessions.ready(make_spec("s-plain"))
    assert ignored_warnings(caplog) == []
