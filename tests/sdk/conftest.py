"""Fixtures for the SDK and CLI tests: the fake control plane served by a real uvicorn on a free
loopback port in a thread (one server for the run, its state reset for every test), and the real
one (`vwm up`'s embedded control plane in a subprocess, with the fake model provider) for the
skills, worker skills and learnings (`live`, `live_vwm`)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import uvicorn
from typer.testing import CliRunner, Result

from tests.sdk.fake_control_plane import ADMIN_KEY, CLIENT_KEY, FakeControlPlane
from tests.support.control_plane import ControlPlane, kill_harnesses
from vwm import Client, ConflictError, StreamSettings
from vwm.cli import app


class ServerThread:
    def __init__(self, fake: FakeControlPlane) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(
            fake.app(),
            host="127.0.0.1",
            port=port,
            lifespan="off",
            ws="none",
            log_level="critical",
            timeout_graceful_shutdown=1,
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self.server.run, name="fake-control-plane", daemon=True
        )

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the fake control plane did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=10)


_FAKE = FakeControlPlane()


@pytest.fixture(scope="session")
def server() -> Iterator[ServerThread]:
    thread = ServerThread(_FAKE)
    thread.start()
    yield thread
    thread.stop()


@pytest.fixture
def fake(server: ServerThread) -> FakeControlPlane:
    _FAKE.reset()
    return _FAKE


@pytest.fixture
def url(server: ServerThread, fake: FakeControlPlane) -> str:
    return server.url


FAST_STREAMS = StreamSettings(idle_timeout_s=5, max_reconnects=3, backoff_s=0)


@pytest.fixture
def client(url: str) -> Iterator[Client]:
    with Client(url, CLIENT_KEY, timeout=5, stream_settings=FAST_STREAMS) as sdk:
        yield sdk


@pytest.fixture
def admin(url: str) -> Iterator[Client]:
    with Client(url, ADMIN_KEY, timeout=5, stream_settings=FAST_STREAMS) as sdk:
        yield sdk


@pytest.fixture
def worker_ready(admin: Client) -> str:
    """A runtime and a worker named "reviewer"."""
    admin.admin.create_runtime(name="claude-2", cli="claude", cli_version="2.0.14")
    admin.admin.create_worker(name="reviewer", runtime="claude-2", repo_url="file:///kb.git")
    return "reviewer"


# The real control plane: one for the run (it takes seconds to start), emptied of workers' skills,
# the workers it can delete and every skill before each test that asks for it.

PROVIDER_KEY = "test-key"


@pytest.fixture(scope="session")
def live_provider() -> Iterator[object]:
    from fake_provider.testing import serve_in_thread

    with serve_in_thread() as provider:
        yield provider


@pytest.fixture(scope="session")
def live_plane(
    tmp_path_factory: pytest.TempPathFactory, live_provider: object
) -> Iterator[ControlPlane]:
    plane = ControlPlane(
        tmp_path_factory.mktemp("live") / "data", {"FAKE_PROVIDER_KEY": PROVIDER_KEY}
    )
    plane.start()
    yield plane
    plane.stop()
    kill_harnesses(plane.data_dir)


@pytest.fixture
def live(live_plane: ControlPlane) -> Iterator[Client]:
    """An admin client of the real control plane, with no skills uploaded."""
    assert live_plane.admin_key is not None
    with Client(live_plane.url, live_plane.admin_key, timeout=60) as sdk:
        _clear(sdk)
        yield sdk


def _clear(sdk: Client) -> None:
    for worker in sdk.admin.list_workers():
        for used in sdk.admin.list_worker_skills(worker["name"]):
            sdk.admin.remove_worker_skill(worker["name"], used.name)
        with contextlib.suppress(ConflictError):  # it has sessions: those tests name theirs
            sdk.admin.delete_worker(worker["name"])
    for skill in sdk.admin.list_skills():
        sdk.admin.delete_skill(skill.name, skill.version)


@pytest.fixture
def live_vwm(
    live: Client, live_plane: ControlPlane, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Result]:
    """Run `vwm ARGS...` against the real control plane with its admin key."""
    monkeypatch.delenv("VWM_URL", raising=False)
    monkeypatch.delenv("VWM_API_KEY", raising=False)
    runner = CliRunner()
    options = ["--url", live_plane.url, "--api-key", str(live_plane.admin_key)]

    def run(*args: str, stdin: str | None = None) -> Result:
        return runner.invoke(app, [*options, *args], input=stdin)

    return run
