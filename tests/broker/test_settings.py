"""The broker's settings from the environment: defaults, values, and refusals that name the
variable to fix."""

from __future__ import annotations

import pytest

from functions.broker.service import BrokerSettingError, BrokerSettings


def test_defaults_and_values() -> None:
    assert BrokerSettings.from_env({}) == BrokerSettings(
        poll_s=1.0, concurrency=4, lease_s=30.0, retention_s=86_400.0, tick_s=30.0
    )
    env = {
        "VWM_BROKER_POLL_S": "0.25",
        "VWM_BROKER_CONCURRENCY": "8",
        "VWM_BROKER_LEASE_S": "10",
        "VWM_BROKER_RETENTION_S": "3600",
        "VWM_TICK_S": "0",
    }
    settings = BrokerSettings.from_env(env)
    assert settings == BrokerSettings(
        poll_s=0.25, concurrency=8, lease_s=10.0, retention_s=3600.0, tick_s=0.0
    )
    assert settings.dispatcher().concurrency == 8


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("VWM_BROKER_POLL_S", "0"),
        ("VWM_BROKER_POLL_S", "soon"),
        ("VWM_BROKER_CONCURRENCY", "2.5"),
        ("VWM_BROKER_CONCURRENCY", "0"),
        ("VWM_BROKER_LEASE_S", "-1"),
        ("VWM_BROKER_RETENTION_S", "inf"),
        ("VWM_TICK_S", "-5"),
        ("VWM_TICK_S", "nan"),
    ],
)
def test_a_value_that_cannot_work_names_its_variable(name: str, value: str) -> None:
    with pytest.raises(BrokerSettingError) as caught:
        BrokerSettings.from_env({name: value})
    assert str(caught.value).startswith(name) or f"{name} " in str(caught.value)
