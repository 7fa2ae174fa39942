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


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """List how long each real-CLI run took (recorded by test_real_clis.py)."""
    rows = [
        (report.nodeid.split("::")[-1], value)
        for report in terminalreporter.getreports("passed") + terminalreporter.getreports("failed")
        for name, value in report.user_properties
        if name == "cli_seconds"
    ]
    if rows:
        terminalreporter.section("real CLI wall times (s)")
        for test, seconds in sorted(rows):
            terminalreporter.write_line(f"{seconds:7.2f}  {test}")
