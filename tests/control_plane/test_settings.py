"""The control plane's durations (`functions.settings`): a value that cannot work is refused at
start-up naming its variable (`SettingError`, code ``invalid_setting``), never a bare
conversion error and never a negative or endless bound taken as given."""

from __future__ import annotations

import pytest

from functions.settings import ControlPlaneSettings, SettingError

BASE = {"VWM_DATA_DIR": "/nonexistent"}


@pytest.mark.parametrize(
    ("name", "value", "read"),
    [
        ("VWM_HARNESS_READY_TIMEOUT_S", "90", lambda s: s.harness_ready_timeout_s),
        ("VWM_HEARTBEAT_S", "0.3", lambda s: s.heartbeat_s),
        ("VWM_HARNESS_CALL_TIMEOUT_S", "12.5", lambda s: s.harness.call_s),
        ("VWM_HARNESS_CLOCK_SKEW_S", "0", lambda s: s.harness.clock_skew_s),
        ("VWM_RECONCILE_GRACE_S", "0", lambda s: s.reconcile_grace_s),
        ("VWM_PROCESSED_EVENTS_RETENTION_S", "2592000", lambda s: s.processed_events_retention_s),
        ("VWM_HARNESS_IDLE_S", "0", lambda s: s.harness_idle_s),
        ("VWM_HARNESS_IDLE_S", "45", lambda s: s.harness_idle_s),
    ],
)
def test_durations_are_read(name: str, value: str, read) -> None:
    assert ControlPlaneSettings.from_env(BASE).harness_idle_s == 300  # the default
    assert read(ControlPlaneSettings.from_env({**BASE, name: value})) == float(value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("VWM_HARNESS_READY_TIMEOUT_S", "soon"),
        ("VWM_HARNESS_READY_TIMEOUT_S", "-5"),
        ("VWM_HARNESS_READY_TIMEOUT_S", "0"),
        ("VWM_HEARTBEAT_S", "nan"),
        ("VWM_HEARTBEAT_S", "inf"),
        ("VWM_HARNESS_CALL_TIMEOUT_S", "-1"),
        ("VWM_HARNESS_STARTUP_GRACE_S", "thirty"),
        ("VWM_HARNESS_CLOCK_SKEW_S", "-0.5"),
        ("VWM_RECONCILE_GRACE_S", "ten"),
        ("VWM_PROCESSED_EVENTS_RETENTION_S", "0"),
        ("VWM_PROMPT_WAIT_S", "100000"),
        ("VWM_HARNESS_IDLE_S", "-1"),
        ("VWM_HARNESS_IDLE_S", "an hour"),
    ],
)
def test_a_duration_that_cannot_work_is_refused_naming_it(name: str, value: str) -> None:
    with pytest.raises(SettingError, match=name) as refused:
        ControlPlaneSettings.from_env({**BASE, name: value})
    assert refused.value.code == "invalid_setting"
