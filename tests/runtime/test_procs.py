"""The process and port facts the local backend relies on: a pid is known with its start time,
a zombie is dead, harness ports are held from the pick on and stay out of the kernel's ephemeral
range."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from functions.runtime import procs


def test_a_process_is_known_by_its_pid_and_start_time() -> None:
    started = procs.start_ticks(os.getpid())

    assert isinstance(started, int)
    assert procs.is_running(os.getpid(), started)
    assert procs.is_running(os.getpid(), None)
    assert not procs.is_running(os.getpid(), started + 1)  # the pid was reused by another


def test_a_zombie_counts_as_dead() -> None:
    child = subprocess.Popen(["sleep", "300"])
    try:
        os.kill(child.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while procs.start_ticks(child.pid) is not None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert Path(f"/proc/{child.pid}").exists()  # not reaped yet: a zombie
        assert not procs.is_running(child.pid, None)
    finally:
        child.wait(timeout=10)
    assert procs.start_ticks(child.pid) is None


def test_harness_ports_are_held_and_below_the_ephemeral_range() -> None:
    first = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])

    for _ in range(20):
        with procs.listening_socket("127.0.0.1") as listener:
            port = listener.getsockname()[1]
            assert procs.PORT_FLOOR <= port < first
            assert listener.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
            # What asyncio wants to set TCP_NODELAY on the harness's connections.
            assert listener.proto == socket.IPPROTO_TCP
            # Held, not just probed: nothing else can take the port until the listener closes.
            with socket.socket() as other, pytest.raises(OSError, match="in use"):
                other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                other.bind(("127.0.0.1", port))
        # Released: a socket may take it again. With SO_REUSEADDR, as the harness's own: the
        # suite's earlier harnesses leave connections in TIME_WAIT on ports of this range, which
        # refuse a plain bind for a minute but are no listener.
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))


def test_a_pick_that_is_taken_meanwhile_is_not_handed_out_twice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every pick lands on the same port, as two launches at once may: the second gets another
    port, because the first one holds its own."""
    monkeypatch.setattr(procs, "secrets", SimpleNamespace(randbelow=lambda _n: 4321))

    with (
        procs.listening_socket("127.0.0.1") as first,
        procs.listening_socket("127.0.0.1") as second,
    ):
        assert first.getsockname()[1] != second.getsockname()[1]
