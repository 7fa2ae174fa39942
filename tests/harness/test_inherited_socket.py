"""``VWM_HARNESS_LISTEN_FD``: the harness serves on a listening socket its launcher bound and
passed down (the local backend does, so no other launch can take the port meanwhile), and stops
with a clear message when the descriptor is no such socket."""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from harness.serve import _inherited


def harness_env(workspace: Path, **settings: str) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin",
        "VWM_WORKSPACE": str(workspace),
        "VWM_CLI_BIN": "/bin/true",
        "VWM_SESSION_TOKEN": "t",
        **settings,
    }


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    with sock:
        yield sock


def test_a_harness_serves_on_the_socket_it_inherits(
    tmp_path: Path, listener: socket.socket
) -> None:
    port, fd = listener.getsockname()[1], listener.fileno()
    # VWM_HARNESS_PORT names the same port, as the local backend sets it: a harness that bound
    # it itself would find it taken by the very socket it was given.
    env = harness_env(tmp_path / "ws", VWM_HARNESS_PORT=str(port), VWM_HARNESS_LISTEN_FD=str(fd))
    harness = subprocess.Popen(
        [sys.executable, "-m", "harness"],
        env=env,
        pass_fds=(fd,),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        listener.close()  # the harness holds its own copy now
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=30)
        assert health.status_code == 200, health.text
        assert health.json()["cli"] == "claude"
        assert_idle_connections_outlive_the_control_planes_pool(port)
    finally:
        harness.terminate()
        output, _ = harness.communicate(timeout=30)
    assert f"harness: claude on http://127.0.0.1:{port}," in output


def assert_idle_connections_outlive_the_control_planes_pool(port: int) -> None:
    """A connection idle for longer than the control plane's pool keeps one (4 s) is still
    open: the pool drops it first, and never reuses one the harness is closing
    (`harness.serve.KEEP_ALIVE_S`)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/healthz")
        assert conn.getresponse().read()
        kept = conn.sock
        time.sleep(5.5)  # past uvicorn's default (5 s), which equalled httpx's
        conn.request("GET", "/healthz")  # on the same socket: http.client never reconnects here
        assert conn.getresponse().status == 200, "the harness closed it"
        assert conn.sock is kept
    finally:
        conn.close()


@pytest.mark.parametrize("value", ["three", "-3", "3.0"])
def test_a_listen_fd_that_is_no_number_stops_the_harness(tmp_path: Path, value: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "harness"],
        env=harness_env(tmp_path / "ws", VWM_HARNESS_LISTEN_FD=value),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert f"VWM_HARNESS_LISTEN_FD={value!r} must be the number" in done.stderr


def test_a_listen_fd_that_is_not_open_stops_the_harness(tmp_path: Path) -> None:
    """Exit status 3, as when the harness cannot bind its port."""
    done = subprocess.run(
        [sys.executable, "-m", "harness"],
        env=harness_env(tmp_path / "ws", VWM_HARNESS_LISTEN_FD="57"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 3, done.stderr
    assert "cannot listen on the socket VWM_HARNESS_LISTEN_FD=57 names" in done.stderr
    assert "Bad file descriptor" in done.stderr


def test_a_listening_tcp_socket_is_taken_over_and_kept_from_children(
    listener: socket.socket,
) -> None:
    inheritable = os.dup(listener.fileno())  # as a child gets it: inheritable
    os.set_inheritable(inheritable, True)
    sock = _inherited(inheritable)
    with sock:
        assert sock.getsockname() == listener.getsockname()
        # What asyncio wants to set TCP_NODELAY on the connections it accepts.
        assert sock.proto == socket.IPPROTO_TCP
        assert not sock.get_inheritable()  # the CLI must not be able to accept on it


def test_a_descriptor_that_is_no_listening_tcp_socket_is_refused_and_left_open() -> None:
    read_end, write_end = os.pipe()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    unlistening = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    unlistening.bind(("127.0.0.1", 0))
    try:
        with pytest.raises(OSError, match="non-socket"):
            _inherited(read_end)
        with pytest.raises(OSError, match="not a TCP one"):
            _inherited(udp.fileno())
        with pytest.raises(OSError, match="does not listen"):
            _inherited(unlistening.fileno())
        for fd in (read_end, udp.fileno(), unlistening.fileno()):
            os.fstat(fd)  # still open: what is refused is not closed
    finally:
        os.close(read_end)
        os.close(write_end)
        udp.close()
        unlistening.close()
