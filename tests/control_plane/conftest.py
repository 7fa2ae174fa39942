"""Fixtures for the control plane over real HTTP: `vwm up`'s embedded system in a subprocess."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.control_plane import ControlPlane, harness_pids, kill_harnesses

__all__ = ["ControlPlane", "harness_pids", "kill_harnesses"]


@pytest.fixture
def control_plane(tmp_path: Path, fake_provider) -> Iterator[ControlPlane]:
    plane = ControlPlane(tmp_path / "data", {"FAKE_PROVIDER_KEY": "test-key"})
    plane.start()
    yield plane
    plane.stop()
    kill_harnesses(plane.data_dir)


@pytest.fixture(scope="session")
def fake_provider():
    from fake_provider.testing import serve_in_thread

    with serve_in_thread() as provider:
        yield provider
