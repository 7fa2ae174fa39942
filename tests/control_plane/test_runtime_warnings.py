"""A runtime whose `credential_ref` names a variable the control plane's environment lacks is stored,
and its answer says so in `warnings` (the variable, the runtime, what to do) while the local
backend is the one that reads it there; `vwm runtime create` and `vwm runtime update` print the
warnings on stderr. On the Knative backend no warning is given: the admin function's own
environment is not where session starts read the key. On PostgreSQL, over real HTTP."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from functions import admin
from functions.api import build_app
from functions.context import lookup_key
from functions.credential_warnings import unset_credentials
from functions.db.api_keys import ApiKeys
from functions.db.engine import transaction
from functions.embedded import prepare
from functions.services import Services
from functions.settings import ControlPlaneSettings
from tests.support.plane_with_database import PlaneWithDatabase, control_plane_on
from tests.support.postgres import postgres_database
from vwm.cli import app

SET = "VWM_TEST_PROVIDER_KEY_SET"
# Never set anywhere: the control plane inherits this process's environment.
UNSET = f"VWM_TEST_PROVIDER_KEY_{uuid.uuid4().hex[:8].upper()}"
RUNTIMES = "/v1/admin/runtimes"


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlaneWithDatabase]:
    data_dir = tmp_path_factory.mktemp("runtime-warnings") / "data"
    with control_plane_on("postgresql", data_dir, {SET: "sk-test"}, prefix="vwm_rt") as plane:
        yield plane


def _runtime(name: str, credential_ref: str | None = None, **fields: Any) -> dict[str, Any]:
    body = {"name": name, "cli": "claude", "cli_version": "2.0.14", **fields}
    if credential_ref is not None:
        body |= {"credential_ref": credential_ref, "provider_base_url": "https://llm.example"}
    return body


def _name() -> str:
    return f"rt-{uuid.uuid4().hex[:10]}"


def test_an_unset_variable_is_stored_and_said_with_what_to_do(local: PlaneWithDatabase) -> None:
    name = _name()
    with local.plane.client() as http:
        created = http.post(RUNTIMES, json=_runtime(name, UNSET))
        read = http.get(f"{RUNTIMES}/{name}").json()
        listed = {r["name"]: r for r in http.get(RUNTIMES).json()["items"]}[name]

    assert created.status_code == 201
    (warning,) = created.json()["warnings"]
    assert warning.startswith(f"{UNSET} is not set, and runtime {name} names it as credential_ref")
    assert "its sessions will not start" in warning
    assert f"export {UNSET}=<the provider key>" in warning and "vwm up" in warning
    assert read["warnings"] == listed["warnings"] == [warning]
    assert read["credential_ref"] == UNSET  # stored as given


def test_a_set_variable_or_none_at_all_gives_no_warning(local: PlaneWithDatabase) -> None:
    with local.plane.client() as http:
        with_key = http.post(RUNTIMES, json=_runtime(_name(), SET))
        without = http.post(RUNTIMES, json=_runtime(_name()))

    assert (with_key.status_code, without.status_code) == (201, 201)
    assert with_key.json()["warnings"] == []
    assert without.json()["warnings"] == []


def test_a_change_is_judged_on_the_runtime_it_leaves(local: PlaneWithDatabase) -> None:
    name = _name()
    with local.plane.client() as http:
        http.post(RUNTIMES, json=_runtime(name, SET)).raise_for_status()
        to_unset = http.patch(f"{RUNTIMES}/{name}", json={"credential_ref": UNSET})
        other_change = http.patch(f"{RUNTIMES}/{name}", json={"default_model": "opus"})
        back = http.patch(f"{RUNTIMES}/{name}", json={"credential_ref": SET})

    assert to_unset.status_code == 200
    assert [w.split(" ", 1)[0] for w in to_unset.json()["warnings"]] == [UNSET]
    assert other_change.json()["warnings"] == to_unset.json()["warnings"]  # still unset
    assert back.json()["warnings"] == []


def test_the_cli_prints_the_warnings_on_stderr(
    local: PlaneWithDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VWM_URL", raising=False)
    monkeypatch.delenv("VWM_API_KEY", raising=False)
    plane = local.plane
    options = ["--url", plane.url, "--api-key", str(plane.admin_key)]

    def vwm(*args: str) -> Any:
        return CliRunner().invoke(app, [*options, "runtime", *args])

    name = _name()
    base = ["--cli", "claude", "--cli-version", "2.0.14"]
    provider = ["--provider-base-url", "https://llm.example"]
    created = vwm("create", name, *base, *provider, "--credential-ref", UNSET)
    assert created.exit_code == 0, created.output
    assert json.loads(created.stdout)["warnings"]  # stdout: the runtime's JSON, as before
    assert created.stderr.startswith(f"warning: {UNSET} is not set, and runtime {name}")
    assert created.stderr.count("\n") == 1

    fixed = vwm("update", name, "--credential-ref", SET, "--job-timeout-s", "90")
    assert fixed.exit_code == 0, fixed.output
    assert fixed.stderr == ""
    document = json.loads(fixed.stdout)
    assert (document["credential_ref"], document["limits"]["job_timeout_s"]) == (SET, 90)

    broken = vwm("update", name, "--credential-ref", UNSET)
    assert broken.exit_code == 0, broken.output
    assert broken.stderr.startswith(f"warning: {UNSET} is not set")
    assert json.loads(broken.stdout)["limits"]["job_timeout_s"] == 90  # other fields kept

    assert vwm("update", name).exit_code == 2  # nothing to change


def test_the_start_up_lines_and_the_answers_say_the_same() -> None:
    named = [("KEY_A", "a"), ("KEY_A", "b"), ("KEY_C", "c"), (None, "d")]
    lines = unset_credentials(named, {"KEY_C": ""})
    assert lines == [
        "KEY_A is not set, and runtimes a, b name it as credential_ref: their sessions will not "
        "start; stop vwm up, export KEY_A=<the provider key> and start it again"
    ]
    (single,) = unset_credentials([("KEY_C", "c")], {})
    assert single.startswith("KEY_C is not set, and runtime c names it as credential_ref: its ")


# On Knative: the admin function in this process, the backend set to knative.


@pytest.fixture(scope="module")
def knative_url() -> Iterator[str]:
    with postgres_database("vwm_rt_knative") as url:
        yield url


@pytest.fixture
async def knative_admin(tmp_path: Path, knative_url: str) -> AsyncIterator[httpx.AsyncClient]:
    prepare(knative_url)
    env = {
        "VWM_DATA_DIR": str(tmp_path),
        "VWM_DATABASE_URL": knative_url,
        "VWM_RUNTIME_BACKEND": "knative",
        "VWM_HARNESS_IMAGE": "registry.example/vwm-harness:1",
    }
    services = Services.build(ControlPlaneSettings.from_env(env))
    with transaction(services.session_factory) as session:
        _, key = ApiKeys(session).issue("knative test", "admin")
    app = build_app(admin.ENDPOINTS, lookup_key, title="t", services=services)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        client.headers["Authorization"] = f"Bearer {key}"
        yield client
    await services.aclose()


async def test_on_knative_no_warning_is_given(knative_admin: httpx.AsyncClient) -> None:
    created = await knative_admin.post(RUNTIMES, json=_runtime("on-knative", UNSET))

    assert created.status_code == 201
    assert created.json()["warnings"] == []
    assert created.json()["credential_ref"] == UNSET
