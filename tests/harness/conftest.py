"""Shared fixtures for the harness tests: real git, with real bare repositories as remotes."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.harness.stand_in import STAND_IN_CLI, RecordingSink
from tests.support.event_sink import SinkServer

GitRunner = Callable[..., str]
BareRepoFactory = Callable[..., Path]


@pytest.fixture
def isolated_git(monkeypatch: pytest.MonkeyPatch) -> None:
    """No global or system git config: what the harness does must work on a bare machine."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", "/dev/null")
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for name in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL",
                 "GIT_DIR", "GIT_WORK_TREE"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def git(isolated_git: None) -> GitRunner:
    """Run git synchronously, as a test's own eyes on a repository; returns stdout, stripped."""

    def run(*args: str, cwd: Path | None = None) -> str:
        identity = ["-c", "user.name=Test", "-c", "user.email=test@example.invalid"]
        done = subprocess.run(
            ["git", *identity, *args], cwd=cwd, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise AssertionError(f"git {' '.join(args)} failed: {done.stderr}")
        return done.stdout.strip()

    return run


@pytest.fixture
def bare_repo_factory(tmp_path: Path, git: GitRunner) -> BareRepoFactory:
    """Makes bare repositories under tmp_path/remotes: by default with one commit on ``main``
    (a README.md, plus any `files`); with ``empty=True`` without any commit."""
    remotes = tmp_path / "remotes"

    def make(name: str = "origin", *, empty: bool = False, files: dict[str, str] | None = None):
        bare = remotes / f"{name}.git"
        git("init", "--quiet", "--bare", "--initial-branch=main", str(bare))
        if empty:
            return bare
        seed = remotes / f"{name}-seed"
        git("init", "--quiet", "--initial-branch=main", str(seed))
        for rel, text in {"README.md": f"# {name}\n", **(files or {})}.items():
            (seed / rel).parent.mkdir(parents=True, exist_ok=True)
            (seed / rel).write_text(text)
        git("add", "--all", cwd=seed)
        git("commit", "--quiet", "-m", "initial commit", cwd=seed)
        git("push", "--quiet", str(bare), "main:main", cwd=seed)
        return bare

    return make


@pytest.fixture
async def sink() -> AsyncIterator[SinkServer]:
    """A CloudEvents sink on a local port that records what arrives (`RecordingSink`)."""
    server = SinkServer(RecordingSink())
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def stand_in(tmp_path: Path) -> Path:
    """The stand-in CLI (`STAND_IN_CLI`) as an executable file."""
    cli = tmp_path / "stand-in-cli"
    cli.write_text(STAND_IN_CLI)
    cli.chmod(0o755)
    return cli
