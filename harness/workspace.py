"""The layout of one session's workspace on its volume, and the harness's small JSON state store.

Everything the session keeps lives under one root (the volume in production, a folder in the
embedded default), so a restart of the harness finds it again:

    root/
      worker_repo/     the worker's knowledge base (a clone)
      session_repo/    the task (a clone, or an empty repo); the CLI's working directory
      .cli-home/       the CLI's own config and state, isolated from the machine's
      .vwm/state.json  harness state (bootstrap record, CLI session id for resume, ...)
      .vwm/jobs/       each job's metadata and event log

Used by the app at start-up, the job runner (state), bootstrap and shutdown.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Workspace:
    root: Path

    @property
    def worker_repo(self) -> Path:
        return self.root / "worker_repo"

    @property
    def session_repo(self) -> Path:
        return self.root / "session_repo"

    @property
    def cli_home(self) -> Path:
        return self.root / ".cli-home"

    @property
    def state_dir(self) -> Path:
        return self.root / ".vwm"

    @property
    def jobs_dir(self) -> Path:
        return self.state_dir / "jobs"

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    def ensure_dirs(self) -> None:
        for path in (self.root, self.cli_home, self.state_dir, self.jobs_dir):
            path.mkdir(parents=True, exist_ok=True)

    def load_state(self) -> dict[str, Any]:
        """The saved state, or an empty dict before the first save."""
        try:
            text = self.state_file.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        state = json.loads(text)
        if not isinstance(state, dict):
            raise ValueError(f"{self.state_file} does not hold a JSON object")
        return state

    def save_state(self, state: dict[str, Any]) -> None:
        write_atomic(self.state_file, json.dumps(state, indent=2, sort_keys=True).encode())


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that a crash leaves either the old or the new file, never half.

    The temporary file sits in the same directory (os.replace is only atomic within a file
    system) and is fsynced before the rename; the directory is fsynced after it so the rename
    itself survives a power cut.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with tmp.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
