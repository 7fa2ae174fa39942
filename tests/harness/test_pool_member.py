"""A warm Knative pool member (harness.pool_member): what it answers before its claim, which
claims it refuses (leaving its environment as it was), and the claim that makes it a session's
harness, whose lifespan runs from the claim to the server's shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from eventing.harness_api import POOL_TOKEN_ENV
from harness.pool_member import PoolMemberApp, is_pool_member
from harness.settings import HarnessSettings

POOL_TOKEN = "pool-token-value"
SESSION_TOKEN = "session-token-value"


class Recorder:
    """Stands in for `harness.app.create_app`: an app that says which session it serves, and
    records its lifespan."""

    def __init__(self) -> None:
        self.built: list[HarnessSettings] = []
        self.lifespan: list[str] = []

    def __call__(self, settings: HarnessSettings) -> Starlette:
        self.built.append(settings)

        @contextlib.asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            self.lifespan.append("started")
            yield
            self.lifespan.append("stopped")

        async def health(request: Request) -> Response:
            return JSONResponse({"session_id": settings.session_id, "cli": settings.cli.kind})

        return Starlette(routes=[Route("/healthz", health)], lifespan=lifespan)


@pytest.fixture
def environment(tmp_path: Path) -> Iterator[None]:
    """The process environment, restored after the test (a claim changes it)."""
    before = dict(os.environ)
    os.environ[POOL_TOKEN_ENV] = POOL_TOKEN
    os.environ["VWM_WORKSPACE"] = str(tmp_path / "workspace")
    os.environ.pop("VWM_SESSION_ID", None)
    yield
    os.environ.clear()
    os.environ.update(before)


def session_env(**overrides: str) -> dict[str, str]:
    return {
        "VWM_SESSION_ID": "s-claimed",
        "VWM_SESSION_TOKEN": SESSION_TOKEN,
        "VWM_CLI": "codex",
        "VWM_MODEL": "gpt-test",
        "VWM_PROVIDER_API_KEY": "sk-claimed",
        **overrides,
    }


@contextlib.asynccontextmanager
async def member(recorder: Recorder) -> AsyncIterator[tuple[PoolMemberApp, httpx.AsyncClient]]:
    """The app with its server lifespan started, and a client; the lifespan is shut down after."""
    app = PoolMemberApp(POOL_TOKEN, recorder)
    sent: list[str] = []
    shutdown = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if not sent:
            return {"type": "lifespan.startup"}
        await shutdown.wait()
        return {"type": "lifespan.shutdown"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message["type"])

    serving = asyncio.create_task(app({"type": "lifespan"}, receive, send))  # type: ignore[arg-type]
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://member") as client:
        yield app, client
    shutdown.set()
    await serving
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


def claim(client: httpx.AsyncClient, env: object, token: str = POOL_TOKEN) -> Any:
    return client.post("/v1/claim", json={"env": env}, headers={"Authorization": f"Bearer {token}"})


def test_only_a_pool_token_without_a_session_makes_a_member() -> None:
    assert is_pool_member({POOL_TOKEN_ENV: "t"})
    assert not is_pool_member({POOL_TOKEN_ENV: "t", "VWM_SESSION_ID": "s"})  # restarted, claimed
    assert not is_pool_member({"VWM_SESSION_ID": "s"})
    assert not is_pool_member({POOL_TOKEN_ENV: ""})


async def test_before_its_claim_it_is_ready_and_serves_nothing_else(environment: None) -> None:
    async with member(Recorder()) as (app, client):
        health = await client.get("/healthz")
        assert health.status_code == 200
        assert health.json() == {"status": "waiting", "pool_member": True}
        refused = await client.post("/v1/jobs", json={"prompt": "hi"})
        assert refused.status_code == 401
        not_yet = await client.post(
            "/v1/jobs", json={"prompt": "hi"}, headers={"Authorization": f"Bearer {POOL_TOKEN}"}
        )
        assert not_yet.status_code == 503
        assert not_yet.json()["error"]["code"] == "not_claimed"
        assert not app.claimed


@pytest.mark.parametrize(
    ("env", "token", "status", "code"),
    [
        (session_env(), "wrong-token", 401, "unauthorized"),
        ({"VWM_SESSION_ID": "s", "VWM_CLI": "claude"}, POOL_TOKEN, 400, "invalid_claim"),
        (session_env(VWM_CLI="notacli"), POOL_TOKEN, 400, "invalid_claim"),
        (session_env(**{"BAD NAME": "x"}), POOL_TOKEN, 400, "invalid_claim"),
        (session_env(VWM_MODEL="a\0b"), POOL_TOKEN, 400, "invalid_json"),
        ({"VWM_SESSION_ID": 3}, POOL_TOKEN, 422, None),
        ("not an object", POOL_TOKEN, 422, None),
    ],
)
async def test_a_bad_claim_is_refused_and_leaves_the_member_waiting_as_it_was(
    environment: None, env: object, token: str, status: int, code: str | None
) -> None:
    before = dict(os.environ)
    recorder = Recorder()
    async with member(recorder) as (app, client):
        refused = await claim(client, env, token)
        assert refused.status_code == status, refused.text
        if code:
            assert refused.json()["error"]["code"] == code
        assert dict(os.environ) == before
        assert not app.claimed and recorder.built == []
        assert (await client.get("/healthz")).json()["status"] == "waiting"


async def test_a_claim_makes_it_the_sessions_harness_until_shutdown(environment: None) -> None:
    recorder = Recorder()
    async with member(recorder) as (app, client):
        claimed = await claim(client, session_env())
        assert claimed.status_code == 200, claimed.text
        assert claimed.json() == {"status": "claimed", "session_id": "s-claimed"}
        assert app.claimed and recorder.lifespan == ["started"]
        [settings] = recorder.built
        assert settings.server.session_token == SESSION_TOKEN
        assert settings.cli.kind == "codex" and settings.cli.model == "gpt-test"
        # The process's environment is the session's (the CLI inherits it), minus the pool's.
        assert os.environ["VWM_PROVIDER_API_KEY"] == "sk-claimed"
        assert POOL_TOKEN_ENV not in os.environ
        # Every request is the session app's now; a second claim finds no claim route.
        health = await client.get("/healthz")
        assert health.json() == {"session_id": "s-claimed", "cli": "codex"}
        again = await claim(client, session_env(VWM_SESSION_ID="s-other"))
        assert again.status_code == 404
        assert len(recorder.built) == 1
    assert recorder.lifespan == ["started", "stopped"]


async def test_a_harness_that_fails_to_start_fails_the_claim_with_a_stable_code(
    environment: None,
) -> None:
    def broken(settings: HarnessSettings) -> Starlette:
        @contextlib.asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            raise RuntimeError("the meter could not start")
            yield

        return Starlette(lifespan=lifespan)

    app = PoolMemberApp(POOL_TOKEN, broken)
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://member") as client:
        failed = await claim(client, session_env())
    assert failed.status_code == 500
    assert failed.json()["error"]["code"] == "claim_failed"
    assert "the meter could not start" in failed.json()["error"]["message"]
    assert not app.claimed


async def test_of_two_claims_at_once_one_wins_and_the_other_is_refused(environment: None) -> None:
    recorder = Recorder()
    async with member(recorder) as (app, client):
        first, second = await asyncio.gather(
            claim(client, session_env()), claim(client, session_env(VWM_SESSION_ID="s-other"))
        )
        statuses = sorted([first.status_code, second.status_code])
        assert statuses == [200, 409], (first.text, second.text)
        loser = first if first.status_code == 409 else second
        assert loser.json()["error"]["code"] == "already_claimed"
        assert len(recorder.built) == 1 and app.claimed
