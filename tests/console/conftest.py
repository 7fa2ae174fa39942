"""The web console in a real browser: Debian's chromium driven by Playwright, against `vwm up`'s
embedded control plane in a subprocess (one for the whole module group), with a real Claude Code
and the fake provider behind it.

Every test module here sets ``pytestmark = CONSOLE_GROUP``: one xdist worker runs them all, so they
share the control plane and the browser. Each test gets a fresh browser context (an empty sessionStorage: signed
out). Screenshots go to ``$VWM_TEST_ARTIFACTS/console`` (default ``.artifacts/console``).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import make_bare_repo, require_cli
from tests.support.control_plane import ControlPlane, add_claude_workers, kill_harnesses
from tests.support.harness_process import REPO_ROOT

ARTIFACTS = Path(os.environ.get("VWM_TEST_ARTIFACTS", REPO_ROOT / ".artifacts")) / "console"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
CONSOLE_GROUP = [pytest.mark.xdist_group("console"), pytest.mark.cli]


def chromium_path() -> str:
    """The system's Chromium: ``VWM_CHROMIUM``, else the first on the PATH."""
    found = os.environ.get("VWM_CHROMIUM") or next(
        (path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None
    )
    if not found:
        pytest.fail(
            "no Chromium for the console's browser tests: install Debian's "
            "(apt-get install chromium; .ci/run does) or set VWM_CHROMIUM to one"
        )
    return found


@dataclass
class Console:
    plane: ControlPlane
    client_key: str
    provider: object

    @property
    def url(self) -> str:
        return f"{self.plane.url}/ui/"


@pytest.fixture(scope="session")
def console_provider() -> Iterator[object]:
    from fake_provider.testing import serve_in_thread

    with serve_in_thread() as provider:
        yield provider


@pytest.fixture(scope="session")
def console(tmp_path_factory: pytest.TempPathFactory, console_provider) -> Iterator[Console]:
    """`vwm up`'s control plane with a Claude Code worker `w` on the fake provider, and a
    client-scope key beside the admin key it printed."""
    require_cli("claude")
    root = tmp_path_factory.mktemp("console")
    plane = ControlPlane(root / "data", {"FAKE_PROVIDER_KEY": "test-key"})
    plane.start()
    try:
        repo = make_bare_repo(root / "worker.git", {"README.md": "# worker knowledge\n"})
        with plane.client() as admin:
            add_claude_workers(admin, console_provider.base_url, repo)
            made = admin.post("/v1/admin/keys", json={"name": "console-client", "scope": "client"})
            made.raise_for_status()
        yield Console(plane, made.json()["key"], console_provider)
    finally:
        plane.stop()
        kill_harnesses(plane.data_dir)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Chromium, for one test module at a time. Not longer: Playwright's sync API keeps an
    asyncio loop running in this thread while it is started, and an async test that this xdist
    worker runs in between (pytest-asyncio) could not start its own. Module scope ends it before
    the worker moves to another module's tests."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium_path(),
            # Root in a container has no user namespaces for Chromium's own sandbox.
            args=["--no-sandbox", "--disable-dev-shm-usage"],
        )
        yield launched
        launched.close()


# The browser's own log line for a load the server refused ("Failed to load resource: the server
# responded with a status of 404 (Not Found)").
REFUSED_LOAD = re.compile(r"status of (\d{3})")


@contextlib.contextmanager
def open_tab(browser, allowed: Iterable[int] = (401, 403)) -> Iterator[Any]:
    """A fresh, signed-out tab (a context of its own: its own sessionStorage). A page error or a
    console error fails the test when the tab closes, except the browser's line for a load
    refused with an `allowed` status (see `allow_http_errors`); `tab.refused` lists the
    statuses of every refused load, for tests that provoke them."""
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    tab = context.new_page()
    tab.set_default_timeout(15_000)
    tab.refused = []
    tab.allowed = set(allowed)
    problems: list[str] = []

    def on_console(message: Any) -> None:
        if message.type != "error":
            return
        if refused := REFUSED_LOAD.search(message.text):
            tab.refused.append(int(refused.group(1)))
            if int(refused.group(1)) in tab.allowed:
                return
        problems.append(f"console {message.type}: {message.text}")

    tab.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    tab.on("console", on_console)
    try:
        yield tab
    finally:
        context.close()
    assert not problems, problems


@pytest.fixture
def page(browser) -> Iterator[Any]:
    """A fresh, signed-out tab (`open_tab`): a key refused (401, 403) is expected by sign-in
    tests; anything else refused fails the test unless it says `allow_http_errors`."""
    with open_tab(browser) as tab:
        yield tab


@pytest.fixture
def refusing_page(browser) -> Iterator[Any]:
    """A fresh tab for a test that makes the API refuse: every 4xx is allowed and listed in
    `refusing_page.refused`."""
    with open_tab(browser, allowed=range(400, 500)) as tab:
        yield tab


@pytest.fixture
def live_session(console: Console) -> Iterator[dict[str, Any]]:
    """A ready session of worker `w`, ended after the test."""
    from tests.console.live_sessions import running_session

    with running_session(console) as session:
        yield session


def allow_http_errors(page: Any, *statuses: int) -> None:
    """Let `page` log failed API calls with these statuses: a test that provokes them on
    purpose (a 422 an edit form shows) says so."""
    page.allowed.update(statuses)


def sign_in(page, console: Console, key: str | None = None) -> None:
    page.goto(console.url)
    page.fill("#api-key", key or console.plane.admin_key)
    page.click("#sign-in button[type=submit]")
    page.wait_for_selector("#nav:not([hidden])")


def screenshot(page, name: str) -> Path:
    """Save the page as ``<name>.png`` among the test artifacts; returns its path."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
