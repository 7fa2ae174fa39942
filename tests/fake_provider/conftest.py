"""Fixtures for the fake provider's own tests: one provider on a real loopback socket per module
(its ledger emptied before each test), and an httpx client for it."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from fake_provider.testing import RunningProvider, serve_in_thread


@pytest.fixture(scope="module")
def running_provider() -> Iterator[RunningProvider]:
    with serve_in_thread() as running:
        yield running


@pytest.fixture
def provider(running_provider: RunningProvider) -> RunningProvider:
    running_provider.ledger.reset()
    return running_provider


@pytest.fixture
def client(provider: RunningProvider) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=provider.base_url, timeout=30) as http:
        yield http
