"""Run the real harness (`python -m harness`) as a subprocess on a free loopback port.

Tests talk to it over real HTTP, exactly as the control plane will.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]
CLI_BIN = REPO_ROOT / ".tools" / "clis" / "node_modules" / ".bin"
TOKEN = "test-session-token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class HarnessProcess:
    def __init__(self, workspace: Path, cli: str, env: Mapping[str, str], log_path: Path) -> None:
        self.workspace = workspace
        self.cli = cli
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._env = {
            **os.environ,
            "VWM_WORKSPACE": str(workspace),
            "VWM_CLI": cli,
            "VWM_CLI_BIN": str(CLI_BIN / cli),
            "VWM_HARNESS_PORT": str(self.port),
            "VWM_SESSION_TOKEN": TOKEN,
            "VWM_GIT_ALLOW_LOCAL": "1",  # the tests' repositories are local bare ones
            **env,
        }
        self._log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> None:
        log = self._log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "harness"],
            cwd=REPO_ROOT,
            env=self._env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"harness exited early:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"harness did not become healthy:\n{self.log()}")

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait()

    def log(self) -> str:
        return self._log_path.read_text(errors="replace") if self._log_path.exists() else ""

    def client(self, timeout: float = 120) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, timeout=timeout, headers={"Authorization": f"Bearer {TOKEN}"}
        )


@contextmanager
def running_harness(
    workspace: Path, cli: str, env: Mapping[str, str], log_path: Path
) -> Iterator[HarnessProcess]:
    harness = HarnessProcess(workspace, cli, env, log_path)
    harness.start()
    try:
        yield harness
    finally:
        harness.stop()
