"""Run the embedded control plane (`python -m functions.embedded`) as a subprocess, and find the
harness processes it starts. Shared by the control-plane tests and the benchmarks."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.support.harness_process import CLI_BIN, REPO_ROOT, free_port
from vwm.local.clis import pinned_version

KEY_LINE = re.compile(r"first admin API key \(shown once\): (vwm_\S+)")


class ControlPlane:
    """The embedded control plane (`python -m functions.embedded`) as a child process."""

    def __init__(self, data_dir: Path, env: dict[str, str]) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir.parent / f"{data_dir.name}-control-plane.log"
        self.env = {
            **os.environ,
            "VWM_DATA_DIR": str(data_dir),
            **{
                f"VWM_{cli.upper()}_BIN": str(CLI_BIN / cli)
                for cli in ("claude", "codex", "gemini", "opencode")
            },
            **env,
        }
        self.admin_key: str | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "functions.embedded", "--port", str(self.port)],
                cwd=REPO_ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"control plane exited:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise RuntimeError(f"control plane did not start:\n{self.log()}")
        if self.admin_key is None:
            match = KEY_LINE.search(self.log())
            assert match, self.log()
            self.admin_key = match.group(1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def client(self, key: str | None = None, timeout: float = 120) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            timeout=timeout,
            headers={"Authorization": f"Bearer {key or self.admin_key}"},
        )


def harness_pids(data_dir: Path) -> list[int]:
    """Harness processes whose workspace lies under `data_dir`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        is_harness = b"harness" in cmdline or b"harness.pooled" in cmdline
        ours = is_harness and str(data_dir).encode() in environ
        if ours and not _unclaimed_pool_member(environ):
            pids.append(int(entry.name))
    return pids


def _unclaimed_pool_member(environ: bytes) -> bool:
    """A warm pool member no session has claimed yet (functions.runtime.warm_pool): not a
    session's harness."""
    for var in environ.split(b"\0"):
        if var.startswith(b"VWM_POOL_MEMBER="):
            return not Path(var.split(b"=", 1)[1].decode(), "workspace").exists()
    return False


def kill_harnesses(data_dir: Path) -> None:
    for pid in harness_pids(data_dir):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


def add_claude_workers(
    client: httpx.Client,
    provider_url: str,
    repo: Path,
    workers: dict[str, dict[str, float]] | None = None,
    *,
    runtime: str = "c",
    credential_ref: str = "FAKE_PROVIDER_KEY",
) -> None:
    """A Claude Code runtime on the fake provider and workers on `repo` (by name, with their
    `timeouts`; one worker `w` without limits by default)."""
    from tests.e2e.conftest import MODELS

    client.post(
        "/v1/admin/runtimes",
        json={
            "name": runtime,
            "cli": "claude",
            "cli_version": pinned_version("claude"),
            "default_model": MODELS["claude"],
            "provider_base_url": provider_url,
            "credential_ref": credential_ref,
        },
    ).raise_for_status()
    for name, timeouts in (workers or {"w": {}}).items():
        body = {"name": name, "runtime": runtime, "repo_url": str(repo), "timeouts": timeouts}
        client.post("/v1/admin/workers", json=body).raise_for_status()


def until(check: Callable[[], Any], plane: ControlPlane, timeout: float = 60) -> Any:
    """`check()`'s first truthy value, polled; after `timeout` seconds an AssertionError that
    ends with the control plane's log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s; control plane log:\n{plane.log()[-4000:]}")
