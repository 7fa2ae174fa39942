"""The API-key middleware on its own, over a tiny app: what a caller gets when no key can be checked."""

from __future__ import annotations

import httpx
from sqlalchemy.exc import OperationalError
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from functions.http import ApiKeyAuth


async def _ok(_request) -> PlainTextResponse:
    return PlainTextResponse("handled")


def _app(lookup) -> ApiKeyAuth:
    return ApiKeyAuth(Starlette(routes=[Route("/v1/sessions", _ok)]), lookup)


async def _get(app, key: str = "vwm_k_secret") -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://cp") as client:
        return await client.get("/v1/sessions", headers={"Authorization": f"Bearer {key}"})


async def test_a_database_that_does_not_answer_gives_503_not_a_500():
    async def down(_presented: str) -> str | None:
        raise OperationalError("SELECT ...", {}, ConnectionRefusedError("refused"))

    response = await _get(_app(down))
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "database_unavailable"
    assert "try again" in response.json()["error"]["message"]


async def test_a_key_that_checks_out_reaches_the_handler_and_a_wrong_one_gets_401():
    async def lookup(presented: str) -> str | None:
        return "client" if presented == "vwm_k_secret" else None

    assert (await _get(_app(lookup))).text == "handled"
    wrong = await _get(_app(lookup), key="vwm_k_wrong")
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "unauthorized"


async def test_a_missing_key_and_a_wrong_one_get_different_messages():
    async def lookup(presented: str) -> str | None:
        return None

    transport = httpx.ASGITransport(app=_app(lookup))
    async with httpx.AsyncClient(transport=transport, base_url="http://cp") as client:
        missing = await client.get("/v1/sessions")
        not_bearer = await client.get("/v1/sessions", headers={"Authorization": "Basic abc"})
        empty = await client.get("/v1/sessions", headers={"Authorization": "Bearer "})
    wrong = await _get(_app(lookup), key="vwm_k_mistyped")

    for answer in (missing, not_bearer, empty):
        error = answer.json()["error"]
        assert (answer.status_code, error["code"]) == (401, "unauthorized")
        assert "Authorization: Bearer" in error["message"] and "VWM_API_KEY" in error["message"]
    error = wrong.json()["error"]
    assert (wrong.status_code, error["code"]) == (401, "unauthorized")
    assert "not known" in error["message"] and "revoked" in error["message"]
    assert "vwm_k_mistyped" not in wrong.text
