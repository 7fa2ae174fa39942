"""The Knative session settings (`functions.settings.KnativeSessionSettings`): every value a
cluster would refuse at a session's start is refused when the control plane starts, with the
variable and what to use; and `vwm up` reports a bad setting with a stable code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from functions.settings import ControlPlaneSettings, KnativeSessionSettings

GOOD = {"VWM_HARNESS_IMAGE": "registry.example/vwm-harness:1.4.0"}


def test_the_defaults_are_what_the_docs_say() -> None:
    settings = KnativeSessionSettings.from_env(GOOD)
    assert (settings.volume_size, settings.cpu, settings.memory) == ("10Gi", "1", "2Gi")
    assert (settings.storage_class, settings.service_account) == (None, "vwm-session")
    assert (settings.volume_retention, settings.request_timeout_s, settings.idle_pod_s) == (
        "delete",
        3600,
        300,
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("VWM_SESSION_VOLUME_SIZE", "1500m"),
        ("VWM_SESSION_VOLUME_SIZE", "20G"),
        ("VWM_SESSION_CPU", "250m"),
        ("VWM_SESSION_CPU", "2.5"),
        ("VWM_SESSION_MEMORY", "512Mi"),
        ("VWM_SESSION_STORAGE_CLASS", "gp3-encrypted"),
        ("VWM_SESSION_SERVICE_ACCOUNT", "agents.sessions"),
        ("VWM_HARNESS_IMAGE", "registry.example:5000/team/vwm-harness@sha256:" + "0" * 64),
        ("VWM_SESSION_VOLUME_RETENTION", "KEEP"),
    ],
)
def test_values_a_cluster_takes_are_taken(name: str, value: str) -> None:
    KnativeSessionSettings.from_env({**GOOD, name: value})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("VWM_SESSION_VOLUME_SIZE", "lots"),
        ("VWM_SESSION_VOLUME_SIZE", "0"),
        ("VWM_SESSION_VOLUME_SIZE", "-5Gi"),
        ("VWM_SESSION_VOLUME_SIZE", "10 Gi"),
        ("VWM_SESSION_CPU", "two"),
        ("VWM_SESSION_CPU", "0m"),
        ("VWM_SESSION_MEMORY", "2GB"),
        ("VWM_SESSION_STORAGE_CLASS", "Fast_SSD"),
        ("VWM_SESSION_SERVICE_ACCOUNT", "-bad-"),
        ("VWM_HARNESS_IMAGE", "vwm harness:latest"),
        ("VWM_HARNESS_IMAGE", "vwm-harness;rm -rf /"),
        ("VWM_SESSION_VOLUME_RETENTION", "archive"),
        ("VWM_SESSION_REQUEST_TIMEOUT_S", "86401"),
        ("VWM_SESSION_REQUEST_TIMEOUT_S", "1.5"),
        ("VWM_SESSION_IDLE_POD_S", "3601"),
        ("VWM_SESSION_RUN_AS_USER", "0"),
        ("VWM_SESSION_RUN_AS_USER", "root"),
    ],
)
def test_values_a_cluster_would_refuse_are_refused_at_start_naming_the_variable(
    name: str, value: str
) -> None:
    with pytest.raises(ValueError, match=name):
        KnativeSessionSettings.from_env({**GOOD, name: value})
    # Checked whichever backend runs: a bad value never waits for the day it is used.
    with pytest.raises(ValueError, match=name):
        ControlPlaneSettings.from_env({**GOOD, name: value, "VWM_DATA_DIR": "/nonexistent"})


LOCAL_ONLY = [
    ("VWM_HARNESS_IDLE_S", "60", "VWM_SESSION_IDLE_POD_S"),
    ("VWM_SANDBOX", "required", "the session's pod is its CLI's boundary"),
    ("VWM_SANDBOX", "off", "the session's pod is its CLI's boundary"),
    ("VWM_SANDBOX_BWRAP", "/usr/bin/bwrap", "no harness runs beside"),
    ("VWM_SANDBOX_SHOW", "/opt/tools", "no harness runs beside"),
]


@pytest.mark.parametrize(("name", "value", "instead"), LOCAL_ONLY)
def test_a_local_only_setting_is_refused_with_knative_saying_what_stands_for_it(
    name: str, value: str, instead: str
) -> None:
    knative = {**GOOD, "VWM_RUNTIME_BACKEND": "knative", "VWM_DATA_DIR": "/nonexistent"}
    with pytest.raises(ValueError, match=name) as refused:
        ControlPlaneSettings.from_env({**knative, name: value})
    assert instead in str(refused.value) and "unset it" in str(refused.value)
    # The same value with the local backend is taken.
    ControlPlaneSettings.from_env({"VWM_DATA_DIR": "/nonexistent", name: value})


def test_with_knative_no_harness_is_stopped_for_idleness_and_the_pool_is_asked_for() -> None:
    knative = {**GOOD, "VWM_RUNTIME_BACKEND": "knative", "VWM_DATA_DIR": "/nonexistent"}
    for given in ({}, {"VWM_WARM_HARNESSES": "0", "VWM_HARNESS_IDLE_S": "0"}):
        settings = ControlPlaneSettings.from_env({**knative, **given})
        assert (settings.warm_harnesses, settings.harness_idle_s) == (0, 0)
    # Warm Services hold a volume and a pod each: none unless asked for.
    pooled = ControlPlaneSettings.from_env({**knative, "VWM_WARM_HARNESSES": "3"})
    assert pooled.warm_harnesses == 3
    local = ControlPlaneSettings.from_env({"VWM_DATA_DIR": "/nonexistent"})
    assert (local.warm_harnesses, local.harness_idle_s) == (2, 300.0)


@pytest.mark.parametrize(
    ("env", "code", "says"),
    [
        ({"VWM_RUNTIME_BACKEND": "kubernetes"}, "invalid_setting", "use local, knative"),
        (
            {"VWM_RUNTIME_BACKEND": "knative", "VWM_HARNESS_IDLE_S": "4"},
            "invalid_setting",
            "VWM_HARNESS_IDLE_S='4' applies to the local runtime backend",
        ),
        (
            {"VWM_RUNTIME_BACKEND": "knative", "VWM_SESSION_MEMORY": "2GB"},
            "invalid_setting",
            "VWM_SESSION_MEMORY",
        ),
        (
            {"VWM_RUNTIME_BACKEND": "knative", "VWM_KUBE_API_URL": "http://127.0.0.1:9"},
            "invalid_harness_spec",
            "set VWM_HARNESS_IMAGE",
        ),
    ],
)
def test_vwm_up_reports_a_setting_that_cannot_work_with_its_code(
    tmp_path: Path, env: dict[str, str], code: str, says: str
) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VWM_")}
    result = subprocess.run(
        [sys.executable, "-m", "vwm", "up", "--port", "0", "--data-dir", str(tmp_path)],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error [{code}]: "), result.stderr
    assert says in last
    assert "Traceback" not in result.stderr
