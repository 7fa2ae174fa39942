"""What only the local backend promises: its folders, the harness's environment, harnesses that
outlive the control plane, no zombies, leftovers killed, a reused pid never mistaken for ours."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from functions.runtime import (
    HarnessNotReady,
    InvalidHarnessSpec,
    RuntimeHandle,
    procs,
)
from functions.runtime.base import idle_stopped, marked_idle
from functions.runtime.local import LocalBackend
from tests.runtime.conftest import CLAUDE_BIN, REPO_ROOT, environ, processes_mentioning
from tests.runtime.contract import READY_S, Sessions, eventually


@pytest.fixture
def sessions(local_sessions: Sessions) -> Sessions:
    return local_sessions


Spawn = Callable[..., subprocess.Popen[bytes]]


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """Starts a process of the test's own (a stand-in for a CLI or an unrelated program) in a
    session of its own; every one is killed and reaped at the end."""
    started: list[subprocess.Popen[bytes]] = []

    def start(argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(argv, env=env, start_new_session=True)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def gone(pid: int) -> bool:
    """No process with this pid, or only a zombie waiting for a parent that is not us."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat[stat.rfind(")") + 2] in "ZX"


async def test_each_session_has_a_workspace_folder_and_a_log(
    local_backend: LocalBackend, sessions: Sessions, make_spec, data_dir: Path
) -> None:
    handle, _ = await sessions.ready(make_spec("s-folders"))

    workspace = data_dir / "sessions" / "s-folders" / "workspace"
    assert handle.backend == "local"
    assert handle.state["workspace"] == str(workspace)
    assert (workspace / ".vwm").is_dir()  # the harness made its own folders there
    log = data_dir / "logs" / "s-folders.log"
    assert "harness: claude on http://127.0.0.1" in log.read_text()
    assert local_backend.workspace("s-folders") == workspace

    await local_backend.teardown(handle)
    assert not workspace.parent.exists()
    assert log.exists()  # kept for a post-mortem


async def test_the_harness_gets_only_the_environment_the_spec_gives(
    sessions: Sessions, make_spec, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VWM_CONTROL_PLANE_SECRET", "x")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "the-control-planes-own")
    spec = make_spec(
        "s-env",
        model="claude-sonnet-4-5",
        provider_base_url="http://127.0.0.1:9",
        credential_env={"VWM_PROVIDER_API_KEY": "sk-session"},
        job_timeout_s=42.0,
        extra_env={"VWM_SYSTEM_PROMPT": "be brief"},
    )
    handle, endpoint = await sessions.ready(spec)

    env = environ(handle.state["pid"])
    assert "VWM_CONTROL_PLANE_SECRET" not in env
    assert "ANTHROPIC_API_KEY" not in env
    assert env["PATH"] == os.environ["PATH"]
    assert env["VWM_PROVIDER_API_KEY"] == "sk-session"
    assert env["VWM_SESSION_TOKEN"] == endpoint.token
    assert endpoint.token not in json.dumps(handle.to_dict())  # derived, never in the handle
    assert env["VWM_HARNESS_HOST"] == "127.0.0.1"
    assert env["VWM_HARNESS_PORT"] == str(handle.state["port"])
    assert env["VWM_WORKSPACE"] == handle.state["workspace"]
    assert env["VWM_CLI"] == "claude"
    assert env["VWM_CLI_BIN"] == str(CLAUDE_BIN)
    assert env["VWM_MODEL"] == "claude-sonnet-4-5"
    assert env["VWM_PROVIDER_BASE_URL"] == "http://127.0.0.1:9"
    assert env["VWM_JOB_TIMEOUT_S"] == "42"
    assert env["VWM_SYSTEM_PROMPT"] == "be brief"
    assert "HOME" not in env


async def test_the_harness_runs_in_its_own_session_and_group(sessions: Sessions, make_spec) -> None:
    handle, _ = await sessions.ready(make_spec("s-group"))

    pid = handle.state["pid"]
    assert os.getpgid(pid) == pid
    assert os.getsid(pid) == pid


def bindable(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def listening_inode(port: int) -> int:
    """The inode of the socket listening on 127.0.0.1:`port`, from the kernel's table."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == f"0100007F:{port:04X}" and fields[3] == "0A":  # 0A: LISTEN
            return int(fields[9])
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")


def socket_fds(pid: int) -> dict[int, int]:
    """The sockets `pid` holds: descriptor number -> inode."""
    found = {}
    for link in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(link) if link.is_symlink() else ""
        if target.startswith("socket:["):
            found[int(link.name)] = int(target[len("socket:[") : -1])
    return found


def closed_on_exec(pid: int, fd: int) -> bool:
    flags = Path(f"/proc/{pid}/fdinfo/{fd}").read_text().split("flags:")[1].split()[0]
    return bool(int(flags, 8) & os.O_CLOEXEC)


async def test_the_port_is_held_from_the_pick_until_the_harness_serves_it(
    sessions: Sessions, make_spec, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The backend binds the harness's port itself and hands the listening socket over: in the
    second the harness takes to start, no other launch can pick the port."""
    at_spawn: dict[str, Any] = {}

    class WatchedPopen(subprocess.Popen):  # type: ignore[type-arg]
        def __init__(self, argv: Any, **kwargs: Any) -> None:
            env = kwargs.get("env") or {}
            if "VWM_HARNESS_PORT" in env:
                at_spawn["port"] = int(env["VWM_HARNESS_PORT"])
                at_spawn["held"] = not bindable(at_spawn["port"])
                at_spawn["listen_fd"] = env.get("VWM_HARNESS_LISTEN_FD")
                at_spawn["pass_fds"] = tuple(kwargs.get("pass_fds", ()))
            super().__init__(argv, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", WatchedPopen)
    handle, _ = await sessions.ready(make_spec("s-held"))

    port, pid = handle.state["port"], handle.state["pid"]
    assert at_spawn["port"] == port
    assert at_spawn["held"], "the port was free when the harness was started"
    listen_fd = int(at_spawn["listen_fd"])
    assert at_spawn["pass_fds"] == (listen_fd,)
    # The harness serves on the very socket it was given, and this process kept no copy.
    assert socket_fds(pid)[listen_fd] == listening_inode(port)
    assert listening_inode(port) not in socket_fds(os.getpid()).values()
    # ... and passes it on to nothing it starts (the CLI, bwrap, git).
    assert closed_on_exec(pid, listen_fd)


async def test_launches_at_once_never_share_a_port(
    sessions: Sessions, make_spec, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every launch's first pick is the same port, as two test workers' may be: each harness
    still gets a port of its own (with picks merely probed, all but one died of 'address
    already in use')."""
    monkeypatch.setattr(procs, "secrets", SimpleNamespace(randbelow=lambda _n: 4321))

    ready = await asyncio.gather(*(sessions.ready(make_spec(f"s-at-once-{n}")) for n in range(3)))

    assert len({handle.state["port"] for handle, _ in ready}) == 3


# The control plane as a separate process that provisions a harness and exits.
_LAUNCHER = """
import asyncio, json, sys
from pathlib import Path
from functions.runtime.base import HarnessSpec
from functions.runtime import procs
from functions.runtime.base import idle_stopped, marked_idle
from functions.runtime.local import LocalBackend

async def main():
    backend = LocalBackend(Path(sys.argv[1]))
    spec = HarnessSpec("s-outlives", "claude", sys.argv[2], None, None, {}, None)
    handle = await backend.provision(spec)
    await backend.wait_ready(handle, 60)
    print(json.dumps(handle.to_dict()))

asyncio.run(main())
"""


async def test_a_harness_outlives_the_control_plane_that_started_it(
    local_backend: LocalBackend, data_dir: Path
) -> None:
    launcher = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _LAUNCHER, str(data_dir), str(CLAUDE_BIN),
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(launcher.communicate(), READY_S)
    assert launcher.returncode == 0, err.decode()
    handle = RuntimeHandle.from_dict(json.loads(out))

    assert await local_backend.status(handle) == "running"
    endpoint = local_backend.endpoint(handle)
    async with httpx.AsyncClient(trust_env=False) as http:
        assert (await http.get(f"{endpoint.url}/healthz")).status_code == 200

    await local_backend.teardown(handle)
    assert await local_backend.status(handle) == "missing"
    assert gone(handle.state["pid"])
    assert processes_mentioning(str(data_dir)) == []


async def test_a_crashed_harness_leaves_no_zombie(
    local_backend: LocalBackend, sessions: Sessions, make_spec
) -> None:
    handle, _ = await sessions.ready(make_spec("s-zombie"))
    pid = handle.state["pid"]

    os.killpg(pid, signal.SIGKILL)

    await eventually(lambda: local_backend.status(handle), "stopped")

    async def reaped() -> bool:
        return not await asyncio.to_thread(Path(f"/proc/{pid}").exists)

    await eventually(reaped, True)


async def test_what_a_dead_harness_left_running_is_killed_before_the_relaunch(
    local_backend: LocalBackend, sessions: Sessions, make_spec, spawn: Spawn
) -> None:
    spec = make_spec("s-leftover")
    handle, _ = await sessions.ready(spec)
    # A CLI runs in a process group of its own with HOME inside the workspace, so it outlives
    # a SIGKILLed harness.
    cli_home = Path(handle.state["workspace"]) / ".cli-home"
    cli = spawn(["sleep", "300"], env={"HOME": str(cli_home), "PATH": os.environ["PATH"]})
    os.killpg(handle.state["pid"], signal.SIGKILL)
    await eventually(lambda: local_backend.status(handle), "stopped")

    relaunched = sessions.track(await local_backend.ensure_running(handle, spec))

    assert await asyncio.to_thread(cli.wait, 10) == -signal.SIGKILL
    await local_backend.wait_ready(relaunched, READY_S)
    assert relaunched.state["pid"] != handle.state["pid"]


async def test_teardown_kills_what_the_harness_started(
    local_backend: LocalBackend, sessions: Sessions, make_spec, spawn: Spawn
) -> None:
    handle, _ = await sessions.ready(make_spec("s-teardown-cli"))
    cli_home = Path(handle.state["workspace"]) / ".cli-home"
    cli = spawn(["sleep", "300"], env={"HOME": str(cli_home), "PATH": os.environ["PATH"]})

    await local_backend.teardown(handle)

    assert await asyncio.to_thread(cli.wait, 10) == -signal.SIGKILL


async def test_a_harness_that_stops_answering_is_replaced(
    local_backend: LocalBackend, sessions: Sessions, make_spec
) -> None:
    spec = make_spec("s-hung")
    handle, _ = await sessions.ready(spec)
    os.killpg(handle.state["pid"], signal.SIGSTOP)

    with pytest.raises(HarnessNotReady) as caught:
        await local_backend.wait_ready(handle, 1.0)
    assert caught.value.retryable
    # Alive, but it serves nothing until SIGCONT: read from /proc, no probe needed.
    assert await local_backend.status(handle) == "stopped"

    replaced = sessions.track(await local_backend.ensure_running(handle, spec))

    assert replaced.state["pid"] != handle.state["pid"]
    assert local_backend.endpoint(replaced).token == local_backend.endpoint(handle).token
    await local_backend.wait_ready(replaced, READY_S)
    assert gone(handle.state["pid"])


async def test_an_idle_stop_keeps_the_workspace_and_ensure_running_brings_it_back(
    local_backend: LocalBackend, sessions: Sessions, make_spec, spawn: Spawn
) -> None:
    spec = make_spec("s-idle")
    handle, _ = await sessions.ready(spec)
    uptime = local_backend.uptime_s(handle)
    assert uptime is not None and 0 <= uptime < 60
    workspace = Path(handle.state["workspace"])
    (workspace / "notes.txt").write_text("kept")
    cli_home = workspace / ".cli-home"
    cli = spawn(["sleep", "300"], env={"HOME": str(cli_home), "PATH": os.environ["PATH"]})

    stopped = await local_backend.stop_idle(handle)

    assert idle_stopped(stopped) and not idle_stopped(handle)
    assert gone(handle.state["pid"])
    assert await asyncio.to_thread(cli.wait, 10) == -signal.SIGKILL  # nothing left running
    assert await local_backend.status(stopped) == "stopped"
    assert local_backend.uptime_s(stopped) is None
    assert (workspace / "notes.txt").read_text() == "kept"

    back = sessions.track(await local_backend.ensure_running(stopped, spec))
    assert not idle_stopped(back) and back.state["pid"] != handle.state["pid"]
    await local_backend.wait_ready(back, READY_S)
    assert await local_backend.status(back) == "running"
    # A handle marked while its harness still runs (the mark comes before the stop) loses the
    # mark when that harness is found answering.
    kept = await local_backend.ensure_running(marked_idle(back), spec)
    assert kept.state["pid"] == back.state["pid"] and not idle_stopped(kept)


async def test_a_reused_pid_is_never_taken_for_the_harness(
    local_backend: LocalBackend, sessions: Sessions, make_spec, spawn: Spawn
) -> None:
    handle, _ = await sessions.ready(make_spec("s-reused"))
    await local_backend.teardown(handle, keep_workspace=True)
    stranger = spawn(["sleep", "300"])
    # After a restart the persisted pid may belong to another program by now.
    reused = RuntimeHandle(
        handle.session_id, "local", {**handle.state, "pid": stranger.pid, "pid_start": 1}
    )

    assert await local_backend.status(reused) == "stopped"
    await local_backend.teardown(reused)

    assert stranger.poll() is None
    assert await local_backend.status(reused) == "missing"


async def test_a_handle_whose_state_was_lost_still_tears_down(
    local_backend: LocalBackend, sessions: Sessions, make_spec, data_dir: Path
) -> None:
    handle, _ = await sessions.ready(make_spec("s-lost"))

    await local_backend.teardown(RuntimeHandle("s-lost", "local", {}))

    assert gone(handle.state["pid"])
    assert processes_mentioning(str(data_dir)) == []
    assert not await asyncio.to_thread(Path(handle.state["workspace"]).exists)


async def test_a_handle_of_another_backend_is_refused(local_backend: LocalBackend) -> None:
    foreign = RuntimeHandle("s-foreign", "knative", {"service": "vwm-s-foreign"})

    with pytest.raises(InvalidHarnessSpec):
        local_backend.endpoint(foreign)
    with pytest.raises(InvalidHarnessSpec):
        await local_backend.teardown(foreign)
