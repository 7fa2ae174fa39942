"""OpenCode through its own server (`harness.opencode_server`), with the real opencode and a real
harness: one server per session that outlives its prompts, started again when it dies, with what
it reads at its start changed, and stopped with the harness however the harness ends; it listens
on loopback behind a password that never reaches the harness's log."""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

import httpx
import pytest

from harness.opencode_server import USERNAME
from tests.e2e.conftest import (
    bootstrap_body,
    cli_servers_in,
    harness_env,
    processes_in,
    start_harness,
)
from tests.support.sse import iter_sse

pytestmark = pytest.mark.cli


@pytest.fixture
def key() -> str:
    return f"server-{uuid.uuid4().hex[:8]}"


@pytest.fixture(params=["none"])
def opencode(request, tmp_path, repos, fake_provider, key):
    """A bootstrapped opencode harness; confined by bwrap where a test asks for
    ``@pytest.mark.parametrize("opencode", ["bwrap"], indirect=True)``."""
    env = harness_env("opencode", fake_provider.base_url, key, VWM_SANDBOX=request.param)
    harness = start_harness(tmp_path, "opencode", env)
    with harness.client() as client:
        assert client.post("/v1/bootstrap", json=bootstrap_body(repos)).status_code == 200
    yield harness
    harness.stop()


def _prompt(harness, prompt: str = "say hello") -> dict:
    with harness.client() as client:
        job = client.post("/v1/jobs", json={"prompt": prompt}).json()
    assert job["status"] == "succeeded", (job["error"], job["summary"], harness.log()[-3000:])
    return job


def _one_server(workspace: Path) -> int:
    deadline = time.monotonic() + 10
    while len(servers := _innermost(cli_servers_in(workspace))) != 1:
        assert time.monotonic() < deadline, servers
        time.sleep(0.1)
    return servers[0]


def _innermost(pids: list[int]) -> list[int]:
    """The server itself, not the bwrap that may wrap it."""
    return [pid for pid in pids if not Path(f"/proc/{pid}/exe").resolve().name.startswith("bwrap")]


def _gone(pids: list[int], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while any(Path(f"/proc/{pid}").exists() and _alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("opencode", ["none", "bwrap"], indirect=True)
def test_prompts_share_one_server_and_its_session(opencode, fake_provider, key) -> None:
    first = _prompt(opencode)
    server = _one_server(opencode.workspace)
    second = _prompt(opencode, "write notes.txt")
    assert _one_server(opencode.workspace) == server  # the same process answered both
    assert second["summary"]["cli_session_id"] == first["summary"]["cli_session_id"]
    assert (opencode.workspace / "session_repo" / "notes.txt").is_file()
    # Normalized like a process run's: the file was written by a tool call the job reports.
    with opencode.client() as client:
        events = list(iter_sse(client.get(f"/v1/jobs/{second['job_id']}/events")))
    kinds = [event.event for event in events]
    assert "tool_call" in kinds and "tool_result" in kinds and kinds[-1] == "job_finished"
    # The second prompt's model call carries the first turn: the session was resumed.
    last_call = fake_provider.ledger.model_calls(key=key)[-1]
    assert last_call.status == 200
    raw = (opencode.workspace / ".vwm" / "jobs" / f"{second['job_id']}.stdout").read_text()
    assert '"type":"tool_use"' in raw and '"type":"step_finish"' in raw  # `run`'s own lines


def test_a_server_that_died_is_started_again_and_the_session_resumes(opencode) -> None:
    first = _prompt(opencode)
    server = _one_server(opencode.workspace)
    os.kill(server, signal.SIGKILL)
    assert _gone([server])
    second = _prompt(opencode)
    assert _one_server(opencode.workspace) != server
    assert second["summary"]["cli_session_id"] == first["summary"]["cli_session_id"]
    assert "opencode server restarting" in opencode.log()


def _a_long_prompt_under_way(client: httpx.Client) -> str:
    """An async "sleep 30" job (the model's answer streams for 30 s), once OpenCode named its
    session."""
    job_id = client.post("/v1/jobs", json={"prompt": "sleep 30", "mode": "async"}).json()["job_id"]
    with client.stream("GET", f"/v1/jobs/{job_id}/events") as stream:
        for event in iter_sse(stream):
            if event.event == "session_started":
                break
    return job_id


def test_a_server_killed_mid_prompt_fails_that_job_and_the_next_one_runs(opencode) -> None:
    _prompt(opencode)
    server = _one_server(opencode.workspace)
    with opencode.client() as client:
        job_id = _a_long_prompt_under_way(client)
        time.sleep(0.5)  # the model's answer is streaming
        os.kill(server, signal.SIGKILL)
        job = client.get(f"/v1/jobs/{job_id}?wait=true").json()
        deadline = time.monotonic() + 20
        while job["status"] == "running" and time.monotonic() < deadline:
            time.sleep(0.2)
            job = client.get(f"/v1/jobs/{job_id}").json()
        events = list(iter_sse(client.get(f"/v1/jobs/{job_id}/events")))
    assert job["status"] == "failed", job
    assert "stopped by signal 9 before its final event" in job["summary"]["error"], job
    (stderr,) = [event.json["data"]["tail"] for event in events if event.event == "stderr"]
    assert "opencode server stopped answering" in stderr
    assert "opencode server lost during a prompt" in opencode.log()
    _prompt(opencode)  # a new server takes the next prompt


def test_cancel_aborts_the_message_and_keeps_the_server(opencode) -> None:
    _prompt(opencode)
    server = _one_server(opencode.workspace)
    with opencode.client() as client:
        job_id = _a_long_prompt_under_way(client)
        started = time.monotonic()
        assert client.post(f"/v1/jobs/{job_id}/cancel").json()["status"] == "cancelled"
        assert time.monotonic() - started < 10
    after = _prompt(opencode)
    assert _one_server(opencode.workspace) == server
    assert after["summary"]["final_text"]


def test_a_changed_instruction_file_reaches_the_next_prompt(opencode, fake_provider, key) -> None:
    _prompt(opencode)
    server = _one_server(opencode.workspace)
    marker = f"marker-{uuid.uuid4().hex[:8]}"
    instructions = opencode.workspace / "AGENTS.md"
    instructions.write_text(instructions.read_text() + f"\nAlways mention {marker}.\n")
    _prompt(opencode)
    counted = [call for call in fake_provider.ledger.model_calls(key=key) if call.counted]
    assert marker in counted[-1].system
    assert _one_server(opencode.workspace) == server  # read per prompt: no new server needed


def test_a_new_skill_gets_a_new_server_that_sees_it(opencode, fake_provider, key) -> None:
    _prompt(opencode)
    server = _one_server(opencode.workspace)
    skill = opencode.workspace / ".cli-home" / ".config" / "opencode" / "skills" / "greeter"
    skill.mkdir(parents=True)
    (skill / "SKILL.md").write_text(
        "---\nname: greeter\ndescription: Greets people by name, warmly.\n---\nSay hello.\n"
    )
    _prompt(opencode)
    assert _one_server(opencode.workspace) != server
    counted = [call for call in fake_provider.ledger.model_calls(key=key) if call.counted]
    offered = counted[-1].system + "".join(counted[-1].tool_descriptions)
    assert "Greets people by name" in offered


def test_the_server_wants_its_password_and_the_log_never_shows_it(opencode) -> None:
    _prompt(opencode)
    server = _one_server(opencode.workspace)
    environ = Path(f"/proc/{server}/environ").read_bytes().split(b"\0")
    password = next(
        entry.split(b"=", 1)[1].decode()
        for entry in environ
        if entry.startswith(b"OPENCODE_SERVER_PASSWORD=")
    )
    (port,) = _listening_ports(server)
    url = f"http://127.0.0.1:{port}/session"
    assert httpx.get(url, timeout=5).status_code == 401
    assert httpx.get(url, auth=(USERNAME, "wrong"), timeout=5).status_code == 401
    assert httpx.get(url, auth=(USERNAME, password), timeout=5).status_code == 200
    assert password not in opencode.log()
    assert f"127.0.0.1:{port}" not in opencode.log()


@pytest.mark.parametrize("opencode", ["none", "bwrap"], indirect=True)
@pytest.mark.parametrize("ending", ["SIGTERM", "SIGKILL"])
def test_the_server_stops_with_the_harness(opencode, ending) -> None:
    _prompt(opencode)
    servers = cli_servers_in(opencode.workspace)
    assert servers
    assert opencode.proc is not None
    if ending == "SIGTERM":
        opencode.stop()
    else:
        os.kill(opencode.proc.pid, signal.SIGKILL)  # no lifespan: the kernel's parent-death signal
        opencode.proc.wait()
    assert _gone(servers), servers
    assert processes_in(opencode.workspace) == []


def _listening_ports(pid: int) -> list[int]:
    """The TCP ports `pid` listens on (its sockets' inodes, found in /proc/net/tcp)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd) if fd.is_symlink() else ""
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = []
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
            ports.append(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def test_the_server_starts_at_bootstrap_and_takes_the_first_prompt(opencode) -> None:
    server = _one_server(opencode.workspace)  # before any prompt
    _prompt(opencode)
    assert _one_server(opencode.workspace) == server
    assert opencode.log().count("opencode server started") == 1
