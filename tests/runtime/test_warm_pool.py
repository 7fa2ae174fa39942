"""The local backend's warm pool (functions.runtime.warm_pool): a session's harness is a process
started before the session, handed its environment at the claim and never anything of another
session; the pool refills, skips a member that died, and its unclaimed members stop with it.
(The whole runtime contract also runs over pool members: test_local_contract.py.)"""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY

from functions.runtime import procs
from functions.runtime.local import LocalBackend
from functions.runtime.warm_pool import WarmPool
from tests.runtime.conftest import environ
from tests.runtime.contract import Sessions, owned_among


@pytest.fixture
def pooled(data_dir: Path) -> Iterator[LocalBackend]:
    backend = LocalBackend(data_dir, stop_grace_s=10.0, startup_grace_s=3.0, warm_harnesses=2)
    pool(backend).fill()
    yield backend
    backend.close()


@pytest.fixture
def sessions(pooled: LocalBackend) -> Sessions:
    return Sessions(pooled)


def pool(backend: LocalBackend) -> WarmPool:
    assert backend.pool is not None
    return backend.pool


def members(backend: LocalBackend) -> dict[str, int]:
    return procs.pool_members(pool(backend).folder)


async def full(backend: LocalBackend) -> dict[str, int]:
    """The pool's members once it is back to its size (it refills in the background)."""
    async with asyncio.timeout(10):
        while len(unclaimed := _unclaimed(backend)) < pool(backend).size:  # noqa: ASYNC110 (processes)
            await asyncio.sleep(0.02)
    return unclaimed


def claims(backend: LocalBackend) -> list[Path]:
    return [
        Path(folder, "workspace")
        for folder in members(backend)
        if Path(folder, "workspace").exists()
    ]


def starts(how: str) -> float:
    """`vwm_harness_starts_total{start=how}` in this process."""
    return REGISTRY.get_sample_value("vwm_harness_starts_total", {"start": how}) or 0.0


def _unclaimed(backend: LocalBackend) -> dict[str, int]:
    return {
        folder: pid
        for folder, pid in members(backend).items()
        if not Path(folder, "workspace").exists()
    }


async def test_a_session_gets_a_warm_member_configured_at_the_claim(
    pooled: LocalBackend, sessions: Sessions, make_spec
) -> None:
    before = await full(pooled)
    warm_starts = starts("warm")
    spec = make_spec("s-warm", credential_env={"VWM_PROVIDER_API_KEY": "sk-secret-of-s-warm"})
    handle, endpoint = await sessions.ready(spec)
    try:
        pid = handle.state["pid"]
        assert pid in before.values(), "the harness is one of the members started before"
        assert starts("warm") == warm_starts + 1  # counted for the operator
        # It serves this session, with its token (wait_ready checked the CLI and the token).
        async with httpx.AsyncClient() as client:
            health = await client.get(f"{endpoint.url}/healthz")
        assert health.status_code == 200 and health.json()["cli"] == "claude"
        # Nothing of the session in what /proc shows of it: it started before the session.
        shown = environ(pid)
        assert "VWM_SESSION_ID" not in shown and "VWM_SESSION_TOKEN" not in shown
        assert not any("sk-secret-of-s-warm" in value for value in shown.values())
        # Found as the session's harness, as one started cold would be.
        workspace = Path(handle.state["workspace"])
        assert pid in procs.processes_in(workspace)
        assert pid in procs.processes_by_session(workspace.parent.parent)["s-warm"]
        # What the pool keeps on disk is private, as the rest of the data folder.
        [claim] = claims(pooled)
        assert claim.read_text() == str(workspace)
        assert stat.S_IMODE(claim.stat().st_mode) == 0o600
        assert stat.S_IMODE(pool(pooled).folder.stat().st_mode) == 0o700
        assert stat.S_IMODE((pooled.log_dir / "pool.log").stat().st_mode) == 0o600
        # A replacement was started for it.
        after = await full(pooled)
        assert pid not in after.values() and len(after) == pool(pooled).size
    finally:
        await pooled.teardown(handle)
    assert not procs.is_running(pid, handle.state["pid_start"])
    member_folder = Path(handle.state["pool_member"])
    assert not await asyncio.to_thread(member_folder.exists), "its folder goes with it"


async def test_each_member_serves_one_session_only(
    pooled: LocalBackend, sessions: Sessions, make_spec
) -> None:
    first, _ = await sessions.ready(make_spec("s-one"))
    (Path(first.state["workspace"]) / "left-by-one.txt").write_text("one's")
    await pooled.teardown(first)
    second, _ = await sessions.ready(make_spec("s-two"))
    try:
        assert second.state["pid"] != first.state["pid"]
        assert not procs.is_running(first.state["pid"], first.state["pid_start"])
        assert not (Path(second.state["workspace"]) / "left-by-one.txt").exists()
        assert Path(second.state["workspace"]) != Path(first.state["workspace"])
    finally:
        await pooled.teardown(second)


async def test_a_member_that_died_is_skipped_and_the_harness_starts_cold(
    pooled: LocalBackend, sessions: Sessions, make_spec
) -> None:
    for pid in (await full(pooled)).values():
        os.killpg(pid, signal.SIGKILL)
    async with asyncio.timeout(10):
        while _unclaimed(pooled):  # noqa: ASYNC110 (processes)
            await asyncio.sleep(0.02)
    cold_starts = starts("cold")
    handle, _ = await sessions.ready(make_spec("s-cold"))
    try:
        assert "VWM_SESSION_ID" in environ(handle.state["pid"]), "started cold, its env its own"
        assert starts("cold") == cold_starts + 1
    finally:
        await pooled.teardown(handle)


async def test_sweep_stops_a_claimed_member_no_session_owns(
    pooled: LocalBackend, sessions: Sessions, make_spec
) -> None:
    handle, _ = await sessions.ready(make_spec("s-orphan"))
    assert await pooled.sweep(owned_among(set())) == ["s-orphan"]
    assert not procs.is_running(handle.state["pid"], handle.state["pid_start"])
    await pooled.teardown(handle)


async def test_closing_stops_the_unclaimed_members_and_leaves_harnesses_running(
    data_dir: Path, make_spec
) -> None:
    backend = LocalBackend(data_dir, stop_grace_s=10.0, startup_grace_s=3.0, warm_harnesses=2)
    pool(backend).fill()
    sessions = Sessions(backend)
    handle, _ = await sessions.ready(make_spec("s-stays"))
    unclaimed = await full(backend)
    backend.close()
    try:
        assert not any(procs.is_running(pid, None) for pid in unclaimed.values())
        assert procs.is_running(handle.state["pid"], handle.state["pid_start"])
        # A backend made after a restart finds it and tears it down.
        await LocalBackend(data_dir).teardown(handle)
        assert not procs.is_running(handle.state["pid"], handle.state["pid_start"])
    finally:
        for pid in unclaimed.values():
            if procs.is_running(pid, None):
                os.killpg(pid, signal.SIGKILL)


def test_the_pool_size_is_a_setting() -> None:
    from functions.settings import ControlPlaneSettings, SettingError

    base = {"VWM_DATA_DIR": "/nonexistent"}
    assert ControlPlaneSettings.from_env(base).warm_harnesses == 2
    assert ControlPlaneSettings.from_env({**base, "VWM_WARM_HARNESSES": "0"}).warm_harnesses == 0
    for bad in ("-1", "two", "65"):
        with pytest.raises(SettingError, match="VWM_WARM_HARNESSES"):
            ControlPlaneSettings.from_env({**base, "VWM_WARM_HARNESSES": bad})


def test_without_a_pool_nothing_is_started(data_dir: Path) -> None:
    backend = LocalBackend(data_dir)
    backend.start_pool()
    backend.close()
    assert backend.pool is None and not (data_dir / "pool").exists()


def test_starting_the_pool_removes_the_folders_earlier_runs_left(data_dir: Path) -> None:
    left = data_dir / "pool" / "gone-member"
    left.mkdir(parents=True)
    (left / "workspace").write_text(str(data_dir / "sessions" / "s-old" / "workspace"))
    backend = LocalBackend(data_dir, warm_harnesses=1)
    backend.start_pool()
    try:
        deadline = time.monotonic() + 10
        while (left.exists() or not _unclaimed(backend)) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not left.exists() and len(_unclaimed(backend)) == 1
    finally:
        backend.close()


# What a harness's start does the same way for any session: with it done before the claim, the
# claim imports no module and loads no CA bundle for it (a warm-up that misses one shows here).
_CLAIMED_START = """
import sys
import httpx, uvicorn
from eventing import tls
from harness import pooled
pooled.warm_up()
before, contexts = set(sys.modules), len(tls._contexts)
uvicorn.Config(pooled._no_app, log_level="info", access_log=False, timeout_graceful_shutdown=10).load()
httpx.AsyncClient(trust_env=False, verify=tls.verified_context())
print(sorted(set(sys.modules) - before), len(tls._contexts) - contexts)
"""


def test_a_member_does_before_its_claim_what_a_harness_start_does_late() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _CLAIMED_START], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[] 0", done.stdout
