"""Fixtures for the SDK and CLI tests: the fake control plane served by a real uvicorn on a free
loopback port in a thread (one server for the run, its state reset for every test)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn

from tests.sdk.fake_control_plane import ADMIN_KEY, CLIENT_KEY, FakeControlPlane
from vwm import Client, StreamSettings


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
