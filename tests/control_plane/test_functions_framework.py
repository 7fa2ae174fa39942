"""Each function deploys alone: `functions-framework --target NAME --asgi` serves its own routes
(with auth and its own OpenAPI part) and nothing of the others'."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from functions.embedded import prepare
from tests.support.harness_process import REPO_ROOT, free_port

OWN_PATH = {
    "admin": "/v1/admin/runtimes",
    "sessions": "/v1/sessions",
    "prompts": "/v1/jobs/unknown",
    "telemetry": "/v1/telemetry/summary",
}


@pytest.fixture(scope="module")
def database(tmp_path_factory) -> tuple[Path, str]:
    data_dir = tmp_path_factory.mktemp("data")
    key = prepare(f"sqlite:///{data_dir / 'vwm.sqlite3'}")
    assert key is not None
    return data_dir, key


@pytest.mark.parametrize("target", sorted(OWN_PATH))
def test_function_serves_only_its_own_routes(target, database):
    data_dir, key = database
    port = free_port()
    binary = Path(sys.executable).parent / "functions-framework"
    proc = subprocess.Popen(
        [
            str(binary),
            "--source",
            str(REPO_ROOT / "functions" / "main.py"),
            "--target",
            target,
            "--asgi",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=REPO_ROOT,
        env={**os.environ, "VWM_DATA_DIR": str(data_dir)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {key}"}
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        own = httpx.get(url + OWN_PATH[target], headers=headers)
        expected = 404 if target == "prompts" else 200  # an unknown job: routed, then not found
        assert own.status_code == expected, own.text
        if target == "prompts":
            assert "no job" in own.json()["error"]["message"]  # routed, not an unknown path
        assert httpx.get(url + OWN_PATH[target]).status_code == 401
        for other, path in OWN_PATH.items():
            if other != target:
                foreign = httpx.get(url + path, headers=headers)
                assert foreign.status_code == 404, (target, path)
        paths = httpx.get(f"{url}/openapi.json").json()["paths"]
        assert any(p.startswith(OWN_PATH[target].rsplit("/", 1)[0]) for p in paths)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
