"""Fixtures for end-to-end tests: the fake model provider, bare git repos, a running harness."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.harness_process import CLI_BIN, HarnessProcess

CLIS = ("claude", "codex", "gemini", "opencode")

# The model each CLI asks the fake provider for. The fake answers any model; these names only need
# to satisfy the CLI's own checks (opencode wants provider/model, defined in its config).
MODELS = {
    "claude": "claude-sonnet-4-5",
    "codex": "gpt-fake",
    "gemini": "gemini-fake",
    "opencode": "fake-model",
}

GOOD_KEY = "test-key"


def require_cli(cli: str) -> None:
    if not (CLI_BIN / cli).exists():
        pytest.fail(f"{cli} is not installed in {CLI_BIN}; run ./task install")


def git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def make_bare_repo(path: Path, files: dict[str, str]) -> Path:
    """A bare repo with one commit on main holding `files`."""
    seed = path.with_name(path.name + "-seed")
    git("init", "-q", "-b", "main", str(seed))
    for name, content in files.items():
        (seed / name).parent.mkdir(parents=True, exist_ok=True)
        (seed / name).write_text(content)
    git("add", "-A", cwd=seed)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "seed", cwd=seed)
    git("clone", "-q", "--bare", str(seed), str(path))
    return path


@pytest.fixture(scope="session")
def fake_provider() -> Iterator[object]:
    from fake_provider.testing import serve_in_thread

    with serve_in_thread() as provider:
        yield provider


def harness_env(cli: str, provider_url: str, key: str = GOOD_KEY, **extra: str) -> dict[str, str]:
    env = {"VWM_PROVIDER_BASE_URL": provider_url, "VWM_PROVIDER_API_KEY": key, **extra}
    if MODELS[cli]:
        env["VWM_MODEL"] = MODELS[cli]
    return env


@pytest.fixture
def repos(tmp_path: Path) -> dict[str, Path]:
    return {
        "worker": make_bare_repo(tmp_path / "worker.git", {"README.md": "# worker knowledge\n"}),
        "session": make_bare_repo(tmp_path / "session.git", {"README.md": "# the task\n"}),
    }


def bootstrap_body(repos: dict[str, Path]) -> dict[str, object]:
    return {
        "worker_repo": {"url": str(repos["worker"]), "branch": "main"},
        "session_repo": {"url": str(repos["session"]), "branch": "main"},
        "system_instructions": "You are a careful engineer.",
        "worker_instructions": "Keep answers short.",
    }


def is_cli_server(pid: int) -> bool:
    """Whether `pid` is a CLI's long-lived server (`opencode serve`, bare or under bwrap)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(
        Path(os.fsdecode(arg)).name == "opencode" and argv[i + 1 : i + 2] == [b"serve"]
        for i, arg in enumerate(argv)
    )


def cli_servers_in(directory: Path) -> list[int]:
    return [pid for pid in processes_in(directory) if is_cli_server(pid)]


def processes_in(directory: Path, *, but_cli_servers: bool = False) -> list[int]:
    """Live processes whose working directory is inside `directory` (leftover CLI runs); with
    `but_cli_servers`, not the session's CLI server, which outlives its prompts by design."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cwd = Path(os.readlink(entry / "cwd"))
            state = (entry / "stat").read_text().split(")")[-1].split()[0]
        except OSError:
            continue
        inside = cwd == directory or directory in cwd.parents
        if state != "Z" and inside and not (but_cli_servers and is_cli_server(int(entry.name))):
            found.append(int(entry.name))
    return found


def start_harness(
    tmp_path: Path, cli: str, env: dict[str, str], name: str = "ws"
) -> HarnessProcess:
    require_cli(cli)
    harness = HarnessProcess(tmp_path / name, cli, env, tmp_path / f"{name}-harness.log")
    harness.start()
    return harness
