"""Both runtime backends hand the runtime's pinned CLI version to the harness as
``VWM_CLI_VERSION`` (docs/harness.md, "The CLI's version"), and the local one npm's own settings
too, so a harness can install that version from a private registry. Real harnesses: the local
backend's as local processes, the Knative backend's in the fake cluster."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from functions.runtime import InvalidHarnessSpec
from functions.runtime.knative_objects import SessionNames, harness_env
from functions.runtime.local import LocalBackend
from tests.runtime.conftest import REPO_ROOT, environ
from tests.runtime.contract import READY_S, Sessions
from tests.runtime.knative_cluster import NAMESPACE, Cluster, knative_cluster
from tests.support.fake_knative import SERVICES

# The version of the project's claude (CLAUDE_BIN in the specs): the harness runs it, no install.
CLAUDE_VERSION = json.loads((REPO_ROOT / "harness" / "clis" / "package.json").read_text())[
    "dependencies"
]["@anthropic-ai/claude-code"]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with knative_cluster(tmp_path / "cluster") as running:
        yield running


async def test_the_local_harness_gets_the_pinned_version_and_npms_settings(
    local_sessions: Sessions, make_spec, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NPM_CONFIG_REGISTRY", "https://npm.mirror.example/")
    monkeypatch.setenv("npm_config_cafile", "/etc/ssl/mirror.pem")
    handle, _ = await local_sessions.ready(make_spec("s-pinned", cli_version=CLAUDE_VERSION))

    env = environ(handle.state["pid"])
    assert env["VWM_CLI_VERSION"] == CLAUDE_VERSION
    assert env["NPM_CONFIG_REGISTRY"] == "https://npm.mirror.example/"
    assert env["npm_config_cafile"] == "/etc/ssl/mirror.pem"


async def test_no_pinned_version_no_variable(local_sessions: Sessions, make_spec) -> None:
    handle, _ = await local_sessions.ready(make_spec("s-unpinned"))
    assert "VWM_CLI_VERSION" not in environ(handle.state["pid"])


async def test_a_spec_may_not_set_the_variable_itself(
    local_backend: LocalBackend, make_spec
) -> None:
    spec = make_spec("s-sneaky", extra_env={"VWM_CLI_VERSION": "9.9.9"})
    with pytest.raises(InvalidHarnessSpec, match="VWM_CLI_VERSION"):
        await local_backend.provision(spec)


def test_the_knative_harness_env_names_the_pinned_version(make_spec) -> None:
    names = SessionNames.of("s-env")
    pinned = {e["name"]: e for e in harness_env(make_spec("s-env", cli_version="2.0.14"), names)}
    assert pinned["VWM_CLI_VERSION"] == {"name": "VWM_CLI_VERSION", "value": "2.0.14"}
    unpinned = harness_env(make_spec("s-env"), names)
    assert "VWM_CLI_VERSION" not in {entry["name"] for entry in unpinned}


async def test_the_knative_service_runs_a_harness_with_the_pinned_version(
    cluster: Cluster, make_spec
) -> None:
    backend = cluster.backend()
    handle = await backend.provision(
        make_spec("s-knative-pinned", worker="w", cli_version=CLAUDE_VERSION)
    )
    try:
        await backend.wait_ready(handle, READY_S)  # the harness took the variable and started
        service = cluster.api.objects(SERVICES, NAMESPACE)[
            SessionNames.of("s-knative-pinned").service
        ]
        (container,) = service["spec"]["template"]["spec"]["containers"]
        env = {entry["name"]: entry.get("value") for entry in container["env"]}
        assert env["VWM_CLI_VERSION"] == CLAUDE_VERSION
    finally:
        await backend.teardown(handle)
