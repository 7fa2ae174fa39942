"""Every field of a runtime does what it says: the admin API refuses a runtime no session could
use (422 ``runtime_invalid``, at creation and at a change judged on the result), stores the
provider's root URL whatever version suffix it was given, and names the fields the configured
backend ignores. The control plane is the embedded app in this process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from functions.embedded import create_app, prepare
from functions.runtime.rules import unapplied_fields
from functions.services import Services
from functions.settings import ControlPlaneSettings
from tests.support.lifespan import serving

VERSION = "1.2.3"


@pytest.fixture
async def plane(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = ControlPlaneSettings.from_env({"VWM_DATA_DIR": str(tmp_path / "data")})
    services = Services.build(settings)
    key = prepare(settings.database_url)
    async with serving(create_app(services, close_services=True)) as client:
        client.headers["Authorization"] = f"Bearer {key}"
        yield client


def runtime(cli: str, **fields: Any) -> dict[str, Any]:
    return {"name": "rt", "cli": cli, "cli_version": VERSION, **fields}


PROVIDER = {"provider_base_url": "https://llm.example", "credential_ref": "LLM_KEY"}

# (cli, fields, the fields each broken rule names)
CANNOT_WORK = [
    ("opencode", PROVIDER, [["default_model", "provider_base_url"]]),
    ("codex", PROVIDER, [["default_model", "provider_base_url"]]),
    ("claude", {"provider_base_url": "https://llm.example"}, [["credential_ref", "provider_base_url"]]),
    ("gemini", {"provider_base_url": "https://llm.example"}, [["credential_ref", "provider_base_url"]]),
    ("claude", {"credential_ref": "LLM_KEY"}, [["credential_ref", "provider_base_url"]]),
    ("opencode", {"default_model": "m", "credential_ref": "LLM_KEY"}, [["credential_ref", "provider_base_url"]]),
    (
        "codex",
        {"provider_base_url": "https://llm.example"},
        [["default_model", "provider_base_url"], ["credential_ref", "provider_base_url"]],
    ),
]  # fmt: skip


def assert_runtime_invalid(answer: httpx.Response, fields: list[list[str]]) -> None:
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["code"] == "runtime_invalid"
    assert error["message"].startswith("this runtime cannot work: ")
    assert [problem["fields"] for problem in error["details"]["problems"]] == fields
    assert all("set" in problem["problem"] for problem in error["details"]["problems"])


@pytest.mark.parametrize(("cli", "fields", "broken"), CANNOT_WORK)
async def test_a_runtime_that_cannot_work_is_refused_at_creation(
    plane: httpx.AsyncClient, cli: str, fields: dict[str, Any], broken: list[list[str]]
) -> None:
    assert_runtime_invalid(
        await plane.post("/v1/admin/runtimes", json=runtime(cli, **fields)), broken
    )
    assert (await plane.get("/v1/admin/runtimes")).json()["items"] == []


@pytest.mark.parametrize(
    ("cli", "fields"),
    [
        ("opencode", {**PROVIDER, "default_model": "qwen"}),
        ("opencode", {"provider_base_url": "http://127.0.0.1:11434", "default_model": "qwen"}),
        ("opencode", {}),  # its vendors, with its own default model
        ("codex", {**PROVIDER, "default_model": "gpt-fake"}),
        ("claude", PROVIDER),  # claude and gemini have a default model a provider may serve
        ("gemini", PROVIDER),
        ("claude", {}),
    ],
)
async def test_a_runtime_that_can_work_is_taken(
    plane: httpx.AsyncClient, cli: str, fields: dict[str, Any]
) -> None:
    made = await plane.post("/v1/admin/runtimes", json=runtime(cli, **fields))
    assert made.status_code == 201, made.text


async def test_a_change_is_judged_on_the_runtime_it_would_leave(plane: httpx.AsyncClient) -> None:
    body = runtime("opencode", **PROVIDER, default_model="qwen")
    assert (await plane.post("/v1/admin/runtimes", json=body)).status_code == 201

    dropped = await plane.patch("/v1/admin/runtimes/rt", json={"default_model": None})
    assert_runtime_invalid(dropped, [["default_model", "provider_base_url"]])
    keyless = await plane.patch("/v1/admin/runtimes/rt", json={"provider_base_url": None})
    assert_runtime_invalid(keyless, [["credential_ref", "provider_base_url"]])
    stored = (await plane.get("/v1/admin/runtimes/rt")).json()
    assert stored["default_model"] == "qwen"
    assert stored["provider_base_url"] == "https://llm.example"

    # Both at once leave a runtime on opencode's own vendors: that works.
    both = await plane.patch(
        "/v1/admin/runtimes/rt",
        json={"provider_base_url": None, "credential_ref": None, "default_model": None},
    )
    assert both.status_code == 200, both.text
    assert both.json()["provider_base_url"] is None
    # An unrelated change to a workable runtime is taken.
    assert (await plane.patch("/v1/admin/runtimes/rt", json={"image": None})).status_code == 200


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("https://api.example.com", "https://api.example.com"),
        ("https://api.example.com/", "https://api.example.com"),
        ("https://api.example.com/v1", "https://api.example.com"),
        ("https://api.example.com/v1/", "https://api.example.com"),
        ("https://api.example.com/v1//", "https://api.example.com"),
        ("https://generativelanguage.example/v1beta", "https://generativelanguage.example"),
        ("https://gw.example/openai/v1", "https://gw.example/openai"),
        ("https://gw.example/v1/account/gateway/anthropic", "https://gw.example/v1/account/gateway/anthropic"),
        ("http://127.0.0.1:18000/v1", "http://127.0.0.1:18000"),
        ("http://[::1]:8080/v1", "http://[::1]:8080"),
        ("https://API.Example.com/V2", "https://api.example.com/V2"),
    ],
)  # fmt: skip
async def test_the_provider_root_is_stored_without_its_version(
    plane: httpx.AsyncClient, given: str, stored: str
) -> None:
    body = runtime("claude", provider_base_url=given, credential_ref="LLM_KEY")
    made = await plane.post("/v1/admin/runtimes", json=body)
    assert made.status_code == 201, made.text
    assert made.json()["provider_base_url"] == stored
    patched = await plane.patch("/v1/admin/runtimes/rt", json={"provider_base_url": given})
    assert patched.json()["provider_base_url"] == stored
    assert (await plane.get("/v1/admin/runtimes/rt")).json()["provider_base_url"] == stored


@pytest.mark.parametrize(
    "url",
    [
        "https://api.example.com/?key=secret",
        "https://api.example.com/v1?x=1",
        "https://api.example.com?",
        "https://api.example.com/#top",
        "https://api.example.com#",
        "https://user:secret@api.example.com",
        "https://api.example.com/v1/messages",
        "https://api.example.com/openai/v1/chat/completions/",
        "https://api.example.com/v1/responses",
        "https://api.example.com/v1beta/models/gemini:generateContent",
        "https://api.example.com:port",
        "ftp://api.example.com",
        "https://",
        "https://api.example.com/a b",
        "https://api.exämple.com",
        "https://api.example.com/" + "a" * 500,
    ],
)
async def test_a_url_that_is_not_a_provider_root_is_refused(
    plane: httpx.AsyncClient, url: str
) -> None:
    body = runtime("claude", provider_base_url=url, credential_ref="LLM_KEY")
    refused = await plane.post("/v1/admin/runtimes", json=body)
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["code"] == "invalid_request"
    assert [problem["field"] for problem in error["details"]["errors"]] == ["provider_base_url"]
    assert "secret" not in refused.text


async def test_the_answer_names_the_fields_the_local_backend_ignores(
    plane: httpx.AsyncClient,
) -> None:
    body = runtime("claude", image="registry.example/vwm/harness:1", limits={"cpu": "2"})
    made = (await plane.post("/v1/admin/runtimes", json=body)).json()
    assert [note["field"] for note in made["notes"]] == ["image", "limits.cpu"]
    assert "local backend" in made["notes"][0]["note"]

    patched = await plane.patch("/v1/admin/runtimes/rt", json={"image": None, "limits": {}})
    assert patched.json()["notes"] == []
    listed = (await plane.get("/v1/admin/runtimes")).json()["items"]
    assert listed[0]["notes"] == []


def test_the_knative_backend_applies_every_field() -> None:
    given = {"image": "registry.example/vwm/harness:1", "cpu": "2", "memory": "4Gi"}
    assert unapplied_fields("knative", **given) == {}
    assert list(unapplied_fields("local", **given)) == ["image", "limits.cpu", "limits.memory"]
