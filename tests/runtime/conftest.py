"""Fixtures for the runtime backend tests: a local backend over a temporary data folder, specs
for the real harness, and a safety net that kills any process a test left behind."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from functions.runtime import HarnessSpec
from functions.runtime.local import LocalBackend
from tests.runtime.contract import Sessions

REPO_ROOT = Path(__file__).resolve().parents[2]
CLAUDE_BIN = REPO_ROOT / ".tools" / "clis" / "node_modules" / ".bin" / "claude"


def environ(pid: int) -> dict[str, str]:
    """The environment a live process was started with."""
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if item)


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose environment mentions `text` (a test's data folder). Written apart
    from `functions.runtime.procs` on purpose: the safety net must not trust the code it checks."""
    needle, found = text.encode(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            if stat[stat.rfind(")") + 2] in "ZX":
                continue
            if needle in (entry / "environ").read_bytes():
                found.append(int(entry.name))
    return found


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "data"
    yield path
    for pid in processes_mentioning(str(path)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def local_backend(data_dir: Path) -> LocalBackend:
    return LocalBackend(data_dir, stop_grace_s=10.0, startup_grace_s=3.0)


@pytest.fixture
async def local_sessions(local_backend: LocalBackend) -> AsyncIterator[Sessions]:
    """Sessions of the local backend, torn down at the end of the test."""
    sessions = Sessions(local_backend)
    yield sessions
    for handle in sessions.latest.values():
        await local_backend.teardown(handle)


@pytest.fixture
def make_spec():
    def make(session_id: str, **overrides) -> HarnessSpec:
        fields = {
            "session_id": session_id,
            "cli": "claude",
            "cli_bin": str(CLAUDE_BIN),
            "model": None,
            "provider_base_url": None,
            "credential_env": {},
            "job_timeout_s": None,
            **overrides,
        }
        return HarnessSpec(**fields)

    return make
