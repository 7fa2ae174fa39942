"""The control plane's ``VWM_SANDBOX`` setting: ``auto`` confines the CLIs in bubblewrap where it
works, ``required`` refuses sessions (and ``vwm up``) without it, ``off`` runs them unconfined.

"Without bwrap" is a bwrap setting that names a file that does not exist; the harness reports in
``/healthz`` what confines its CLI, and its environment shows what it was told to hide.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from functions.runtime.errors import SandboxUnavailable
from functions.runtime.local import LocalBackend
from functions.runtime.sandbox import choose
from functions.settings import ControlPlaneSettings
from tests.runtime.contract import Sessions
from tests.support.control_plane import ControlPlane
from tests.support.harness_process import REPO_ROOT, free_port


def working_bwrap() -> str:
    bwrap = shutil.which("bwrap")
    if bwrap is None or (problem := choose("required", bwrap)).refused:
        pytest.fail("bubblewrap does not work here; install it (.ci/run does)")
    assert problem.bwrap is not None
    return problem.bwrap


@pytest.fixture
def no_bwrap(tmp_path: Path) -> str:
    return str(tmp_path / "no-such-bwrap")


@pytest.fixture
async def backend_with(data_dir: Path) -> AsyncIterator:
    """Makes a local backend with a given sandbox choice; tears down what it provisioned."""
    made: list[Sessions] = []

    def make(mode: str, bwrap: str) -> Sessions:
        backend = LocalBackend(data_dir, sandbox=choose(mode, bwrap), startup_grace_s=3.0)
        made.append(Sessions(backend))
        return made[-1]

    yield make
    for sessions in made:
        for handle in sessions.latest.values():
            await sessions.backend.teardown(handle)


async def harness_sandbox(sessions: Sessions, spec) -> tuple[str, dict[str, str]]:
    """What the harness reports confining its CLI with, and its VWM_SANDBOX* environment."""
    handle, endpoint = await sessions.ready(spec)
    async with httpx.AsyncClient() as http:
        health = (await http.get(f"{endpoint.url}/healthz")).json()
    environ_file = Path(f"/proc/{handle.state['pid']}/environ")
    environ = (await asyncio.to_thread(environ_file.read_bytes)).split(b"\0")
    env = dict(item.decode().split("=", 1) for item in environ if item.startswith(b"VWM_SANDBOX"))
    return health["sandbox"], env


def test_the_setting_defaults_to_auto_and_refuses_unknown_values() -> None:
    assert ControlPlaneSettings.from_env({}).sandbox == "auto"
    assert ControlPlaneSettings.from_env({"VWM_SANDBOX": "Required"}).sandbox == "required"
    with pytest.raises(ValueError, match="auto, required, off"):
        ControlPlaneSettings.from_env({"VWM_SANDBOX": "yes"})


async def test_required_without_bwrap_refuses_to_start_a_session(
    backend_with, make_spec, no_bwrap: str, data_dir: Path
) -> None:
    sessions = backend_with("required", no_bwrap)
    with pytest.raises(SandboxUnavailable) as refused:
        await sessions.backend.provision(make_spec("s1"))
    assert refused.value.code == "sandbox_unavailable"
    assert not refused.value.retryable
    assert "install bubblewrap" in refused.value.message
    assert not sessions.backend.workspace("s1").exists()


async def test_auto_confines_the_cli_when_bwrap_works_and_hides_the_data_folder(
    backend_with, make_spec, data_dir: Path
) -> None:
    bwrap = working_bwrap()
    sandbox, env = await harness_sandbox(backend_with("auto", "bwrap"), make_spec("s1"))
    assert sandbox == "bwrap"
    assert env["VWM_SANDBOX_BWRAP"] == bwrap
    assert str(data_dir) in env["VWM_SANDBOX_HIDE"].split(os.pathsep)


async def test_required_with_bwrap_confines_the_cli(backend_with, make_spec) -> None:
    working_bwrap()
    sandbox, _ = await harness_sandbox(backend_with("required", "bwrap"), make_spec("s1"))
    assert sandbox == "bwrap"


async def test_auto_without_bwrap_runs_unconfined_and_says_how_to_fix_it(
    backend_with, make_spec, no_bwrap: str
) -> None:
    sessions = backend_with("auto", no_bwrap)
    sandbox, env = await harness_sandbox(sessions, make_spec("s1"))
    assert (sandbox, env) == ("none", {"VWM_SANDBOX": "none"})
    notice = sessions.backend.sandbox.announcement()
    assert "UNCONFINED" in notice and "was not found" in notice
    assert "install bubblewrap" in notice and "VWM_SANDBOX=required" in notice


async def test_off_runs_unconfined_even_where_bwrap_works(backend_with, make_spec) -> None:
    working_bwrap()
    sandbox, _ = await harness_sandbox(backend_with("off", "bwrap"), make_spec("s1"))
    assert sandbox == "none"


def test_vwm_up_refuses_to_start_when_a_sandbox_is_required_and_missing(
    tmp_path: Path, no_bwrap: str
) -> None:
    env = {
        **os.environ,
        "VWM_DATA_DIR": str(tmp_path / "data"),
        "VWM_SANDBOX": "required",
        "VWM_SANDBOX_BWRAP": no_bwrap,
    }
    done = subprocess.run(
        [sys.executable, "-m", "functions.embedded", "--port", str(free_port())],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "VWM_SANDBOX=required" in done.stderr and "install bubblewrap" in done.stderr
    assert not (tmp_path / "data" / "vwm.sqlite3").exists()


@pytest.mark.parametrize(
    ("mode", "line"),
    [("auto", "agents run sandboxed in bubblewrap"), ("off", "agents run UNCONFINED")],
)
def test_vwm_up_says_how_agents_run(tmp_path: Path, mode: str, line: str) -> None:
    working_bwrap()
    plane = ControlPlane(tmp_path / "data", {"VWM_SANDBOX": mode})
    plane.start()
    try:
        assert line in plane.log()
    finally:
        plane.stop()
