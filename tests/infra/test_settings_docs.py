"""docs/control-plane.md's table of the runtime backend's settings says what functions/settings.py
does: a row for every variable `KnativeSessionSettings` reads (and `VWM_RUNTIME_BACKEND`), each
with the default the code has, and the ranges it states are the ones the code accepts."""

from __future__ import annotations

import re
from dataclasses import fields

import pytest

from functions.settings import ControlPlaneSettings, KnativeSessionSettings
from tests.infra.manifests import REPO
from tests.infra.settings_read import RecordingEnv

SECTION = "## The runtime backend"
# The field of KnativeSessionSettings each variable sets.
FIELDS = {
    "VWM_HARNESS_IMAGE": "harness_image",
    "VWM_SESSION_VOLUME_SIZE": "volume_size",
    "VWM_SESSION_STORAGE_CLASS": "storage_class",
    "VWM_SESSION_VOLUME_RETENTION": "volume_retention",
    "VWM_SESSION_REQUEST_TIMEOUT_S": "request_timeout_s",
    "VWM_SESSION_IDLE_POD_S": "idle_pod_s",
    "VWM_SESSION_SERVICE_ACCOUNT": "service_account",
    "VWM_SESSION_CPU": "cpu",
    "VWM_SESSION_MEMORY": "memory",
    "VWM_SESSION_RUN_AS_USER": "run_as_user",
}


def table() -> dict[str, tuple[str, str]]:
    """Variable -> (meaning, default) from the section's table; a row naming two variables
    gives each its own default (``1``, ``2Gi``)."""
    text = (REPO / "docs" / "control-plane.md").read_text()
    section = text[text.index(SECTION) :]
    section = section[: section.index("\n## ", len(SECTION))]
    rows: dict[str, tuple[str, str]] = {}
    for line in section.splitlines():
        if not line.startswith("| `VWM_"):
            continue
        names_cell, meaning, default_cell = (cell.strip() for cell in line.strip("|").split(" | "))
        names = re.findall(r"`(VWM_[A-Z0-9_]+)`", names_cell)
        defaults = re.findall(r"`([^`]*)`", default_cell) or [default_cell] * len(names)
        pairs = zip(names, defaults, strict=True)
        rows.update({name: (meaning, default) for name, default in pairs})
    return rows


def shown(value: object) -> str:
    return "unset" if value in (None, "") else str(value)


def test_every_setting_of_the_knative_backend_has_a_row() -> None:
    recording = RecordingEnv({})
    KnativeSessionSettings.from_env(recording)
    assert set(FIELDS) == recording.read
    assert {f.name for f in fields(KnativeSessionSettings)} == set(FIELDS.values())
    assert set(table()) == {"VWM_RUNTIME_BACKEND", *FIELDS}


def test_each_row_gives_the_default_the_code_has() -> None:
    rows = table()
    defaults = KnativeSessionSettings.from_env({})
    assert defaults == KnativeSessionSettings()
    for name, field in FIELDS.items():
        assert rows[name][1] == shown(getattr(defaults, field)), name
    assert rows["VWM_RUNTIME_BACKEND"][1] == ControlPlaneSettings.runtime_backend


@pytest.mark.parametrize("name", ["VWM_SESSION_REQUEST_TIMEOUT_S", "VWM_SESSION_IDLE_POD_S"])
def test_each_range_in_the_table_is_the_one_the_code_accepts(name: str) -> None:
    meaning, _ = table()[name]
    low, high = map(int, re.search(r"from (\d+) to (\d+)", meaning).groups())  # type: ignore[union-attr]
    field = FIELDS[name]
    for accepted in (low, high):
        assert getattr(KnativeSessionSettings.from_env({name: str(accepted)}), field) == accepted
    for refused in (low - 1, high + 1):
        with pytest.raises(ValueError, match=name):
            KnativeSessionSettings.from_env({name: str(refused)})


def test_the_choices_in_the_table_are_the_ones_the_code_accepts() -> None:
    rows = table()
    for name, choices in (
        ("VWM_RUNTIME_BACKEND", ("local", "knative")),
        ("VWM_SESSION_VOLUME_RETENTION", ("delete", "keep")),
    ):
        for choice in choices:
            assert f"`{choice}`" in rows[name][0] + rows[name][1], (name, choice)
        with pytest.raises(ValueError, match=name):
            ControlPlaneSettings.from_env({name: "other"})
    with pytest.raises(ValueError, match="VWM_SESSION_RUN_AS_USER"):
        KnativeSessionSettings.from_env({"VWM_SESSION_RUN_AS_USER": "0"})
    assert "not 0" in rows["VWM_SESSION_RUN_AS_USER"][0]
