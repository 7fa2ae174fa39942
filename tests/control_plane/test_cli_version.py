"""A runtime's ``cli_version`` is what its sessions run: the admin API takes exact versions only,
and a session on a runtime that pins another version than the machine's CLI gets that version,
installed by its harness with the real npm from a registry this test serves
(tests/support/npm_registry.py). The control plane is the embedded app in this process, its
harnesses real subprocesses of the local backend. The machine's claude is the fake CLI at
1.0.0; each copy answers a prompt with "fake cli <version>"."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import update

from functions.db.engine import make_engine, session_factory, transaction
from functions.db.models import Runtime
from functions.embedded import create_app, prepare
from functions.services import Services
from functions.settings import ControlPlaneSettings
from tests.control_plane.conftest import harness_pids, kill_harnesses
from tests.e2e.conftest import make_bare_repo
from tests.support.lifespan import serving
from tests.support.npm_registry import NpmRegistry, fake_cli, npm_registry

BAD_VERSIONS = [
    "../2.0.0", "2.0.0/../../x", "2.0.0/x", "2.0.0 ", "2 .0.0", "$(id)", "2.0.0;id", "`id`",
    "2.0.0|x", "latest", "2", "^2.0.0", "2.0.0+build", "pinned", "",
]  # fmt: skip


@pytest.fixture
def registry() -> Iterator[NpmRegistry]:
    with npm_registry() as served:
        served.publish("@anthropic-ai/claude-code", ["1.0.0", "2.0.0"], "claude")
        yield served


@dataclass
class Plane:
    client: httpx.AsyncClient
    database_url: str


@pytest.fixture
async def served(
    tmp_path: Path, registry: NpmRegistry, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Plane]:
    machine_cli = tmp_path / "machine" / "claude"
    machine_cli.parent.mkdir()
    machine_cli.write_text(fake_cli("1.0.0"))
    machine_cli.chmod(0o755)
    # Read by the control plane when it launches a harness: its CLI, and npm's registry.
    monkeypatch.setenv("VWM_CLAUDE_BIN", str(machine_cli))
    monkeypatch.setenv("npm_config_registry", registry.url)
    monkeypatch.setenv("npm_config_fetch_retries", "0")
    data_dir = tmp_path / "data"
    settings = ControlPlaneSettings.from_env(
        {
            "VWM_DATA_DIR": str(data_dir),
            "VWM_ALLOW_LOCAL_REPOS": "1",
            "VWM_SANDBOX": "off",
            "VWM_HARNESS_READY_TIMEOUT_S": "30",
        }
    )
    services = Services.build(settings)
    key = prepare(settings.database_url)
    try:
        async with serving(create_app(services, close_services=True)) as client:
            client.headers["Authorization"] = f"Bearer {key}"
            client.timeout = httpx.Timeout(120)
            yield Plane(client, settings.database_url)
    finally:
        kill_harnesses(data_dir)


@pytest.fixture
def plane(served: Plane) -> httpx.AsyncClient:
    return served.client


async def _worker(client: httpx.AsyncClient, repo: Path, version: str) -> str:
    name = f"w-{version.replace('.', '-')}"
    runtime = await client.post(
        "/v1/admin/runtimes", json={"name": name, "cli": "claude", "cli_version": version}
    )
    assert runtime.status_code == 201, runtime.text
    worker = await client.post(
        "/v1/admin/workers", json={"name": name, "runtime": name, "repo_url": str(repo)}
    )
    assert worker.status_code == 201, worker.text
    return name


async def test_a_session_runs_the_version_its_runtime_pins(
    plane: httpx.AsyncClient, registry: NpmRegistry, tmp_path: Path
) -> None:
    repo = make_bare_repo(tmp_path / "kb.git", {"README.md": "# kb\n"})
    machines = await _worker(plane, repo, "1.0.0")
    pinned = await _worker(plane, repo, "2.0.0")

    texts = {}
    for worker in (machines, pinned):
        started = await plane.post("/v1/sessions", json={"worker": worker})
        assert started.status_code == 201, started.text
        prompt = {"session_id": started.json()["id"], "prompt": "hello"}
        answer = await plane.post("/v1/prompts", json=prompt)
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == "succeeded", answer.text
        texts[worker] = answer.json()["result"]["final_text"]
    assert texts == {machines: "fake cli 1.0.0", pinned: "fake cli 2.0.0"}
    assert len(registry.tarball_requests()) == 1  # the pinned one only


async def test_a_version_that_cannot_be_installed_fails_the_session_start_with_the_reason(
    plane: httpx.AsyncClient, tmp_path: Path, registry: NpmRegistry
) -> None:
    repo = make_bare_repo(tmp_path / "kb.git", {"README.md": "# kb\n"})
    worker = await _worker(plane, repo, "3.0.0")  # exact, but never published

    started = await plane.post("/v1/sessions", json={"worker": worker})
    assert started.status_code == 503, started.text
    error = started.json()["error"]
    assert error["code"] == "session_failed"
    assert error["details"]["cause"] == "cli_install_failed"
    assert "has no @anthropic-ai/claude-code@3.0.0" in error["message"]
    session = (await plane.get(f"/v1/sessions/{error['details']['session_id']}")).json()
    assert session["status"] == "failed"
    assert session["error"]["code"] == "cli_install_failed"
    assert harness_pids(tmp_path / "data") == []


@pytest.mark.parametrize("version", BAD_VERSIONS)
async def test_the_admin_api_takes_exact_versions_only(
    plane: httpx.AsyncClient, version: str
) -> None:
    body = {"name": "rt", "cli": "claude", "cli_version": version}
    refused = await plane.post("/v1/admin/runtimes", json=body)
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["code"] == "invalid_request"
    assert [problem["field"] for problem in error["details"]["errors"]] == ["cli_version"]
    assert (await plane.get("/v1/admin/runtimes")).json()["items"] == []

    made = await plane.post("/v1/admin/runtimes", json={**body, "cli_version": "2.1.197"})
    assert made.status_code == 201, made.text
    patched = await plane.patch("/v1/admin/runtimes/rt", json={"cli_version": version})
    assert patched.status_code == 422, patched.text
    assert patched.json()["error"]["code"] == "invalid_request"
    assert (await plane.get("/v1/admin/runtimes/rt")).json()["cli_version"] == "2.1.197"


async def test_the_admin_api_takes_a_prerelease(plane: httpx.AsyncClient) -> None:
    body = {"name": "rt", "cli": "gemini", "cli_version": "0.62.0-preview.1"}
    made = await plane.post("/v1/admin/runtimes", json=body)
    assert made.status_code == 201, made.text
    assert made.json()["cli_version"] == "0.62.0-preview.1"


async def test_a_stored_version_that_is_not_exact_fails_the_session_start_clearly(
    served: Plane, tmp_path: Path
) -> None:
    """A runtime row from before the admin API checked versions: the session fails with what
    to do, and no harness is started with it."""
    repo = make_bare_repo(tmp_path / "kb.git", {"README.md": "# kb\n"})
    worker = await _worker(served.client, repo, "1.0.0")
    engine = make_engine(served.database_url)
    try:
        with transaction(session_factory(engine)) as db:
            db.execute(update(Runtime).where(Runtime.name == worker).values(cli_version="pinned"))
    finally:
        engine.dispose()

    started = await served.client.post("/v1/sessions", json={"worker": worker})
    error = started.json()["error"]
    assert error["details"]["cause"] == "cli_version_invalid", started.text
    assert f"PATCH /v1/admin/runtimes/{worker}" in error["message"]
    assert harness_pids(tmp_path / "data") == []
