"""Fixtures for the fake provider's own tests: a provider on a real loopback socket, an httpx client."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from fake_provider.testing import RunningProvider, serve_in_thread


@pytest.fixture
def provider() -> Iterator[RunningProvider]:
    with serve_in_thread() as running:
        yield running


@pytest.fixture
def client(provider: RunningProvider) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=provider.base_url, timeout=30) as http:
        yield http
