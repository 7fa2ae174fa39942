"""The provider key never reaches the agent: with each real CLI, the agent's shell dumps its
own environment, and neither that nor any file of the workspace (CLI home included) holds the
key; what it does hold, the session's placeholder, works with the meter only.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from fake_provider.app import FakeProvider
from fake_provider.testing import serve_in_thread
from tests.e2e.conftest import CLIS, bootstrap_body, harness_env, start_harness

pytestmark = pytest.mark.cli


def files_holding(root: Path, secret: bytes) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                if secret in path.read_bytes():
                    found.append(str(path.relative_to(root)))
            except OSError:
                continue
    return found


KEY = f"sk-real-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def keyed_provider():
    """A provider that, like a real one, accepts its own key only."""
    with serve_in_thread(provider=FakeProvider(keys={KEY})) as provider:
        yield provider


@pytest.mark.parametrize("cli", CLIS)
def test_the_agent_never_holds_the_provider_key(cli, tmp_path, keyed_provider, repos):
    key, fake_provider = KEY, keyed_provider
    harness = start_harness(tmp_path, cli, harness_env(cli, fake_provider.base_url, key))
    try:
        with harness.client() as client:
            assert client.post("/v1/bootstrap", json=bootstrap_body(repos)).status_code == 200
            job = client.post("/v1/jobs", json={"prompt": "run `env > env.txt`"}).json()
            assert job["status"] == "succeeded", (job, harness.log())
        dumped = (harness.workspace / "session_repo" / "env.txt").read_text()
        assert key not in dumped
        placeholders = {
            line.split("=", 1)[1]
            for line in dumped.splitlines()
            if "=" in line and line.split("=", 1)[1].startswith("vwm-meter-")
        }
        assert len(placeholders) == 1, dumped
        assert files_holding(harness.workspace, key.encode()) == []
        # The calls did reach the provider with the real key, through the meter only.
        assert fake_provider.ledger.model_calls(key=key)

        # The placeholder is worth nothing anywhere but the session's meter.
        [placeholder] = placeholders
        direct = httpx.post(
            f"{fake_provider.base_url}/v1/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
            headers={"authorization": f"Bearer {placeholder}"},
            timeout=10,
        )
        assert direct.status_code == 401
        assert [e.status for e in fake_provider.ledger.model_calls(key=placeholder)] == [401]
    finally:
        harness.stop()
