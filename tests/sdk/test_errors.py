"""Error answers become typed errors with the API's code, message and details; transport
failures become `UnreachableError`. Pure client tests over httpx.MockTransport."""

from __future__ import annotations

import socket

import httpx
import pytest

from vwm import (
    AuthError,
    Client,
    ConflictError,
    NotFoundError,
    ServerError,
    SessionBusyError,
    UnreachableError,
    ValidationError,
    VWMError,
)
from vwm.errors import ConfigError, ProtocolError


def client_answering(status: int, body: object = None, *, text: str | None = None) -> Client:
    def handle(request: httpx.Request) -> httpx.Response:
        if text is not None:
            return httpx.Response(status, text=text)
        return httpx.Response(status, json=body)

    return Client("http://cp.test", "vwm_k_s", transport=httpx.MockTransport(handle))


def api_error(code: str, message: str = "it went wrong", **details: object) -> dict:
    error: dict = {"code": code, "message": message}
    if details:
        error["details"] = details
    return {"error": error}


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (401, "unauthorized", AuthError),
        (403, "forbidden", AuthError),
        (404, "not_found", NotFoundError),
        (409, "conflict", ConflictError),
        (409, "session_ended", ConflictError),
        (409, "session_busy", SessionBusyError),
        (400, "bad_request", ValidationError),
        (422, "invalid_request", ValidationError),
        (500, "internal", ServerError),
        (503, "harness_unavailable", ServerError),
        (413, "payload_too_large", VWMError),
    ],
)
def test_error_answers_map_to_typed_errors(status: int, code: str, expected: type[VWMError]):
    client = client_answering(status, api_error(code, field="prompt"))
    with pytest.raises(expected) as caught:
        client.request("GET", "/v1/sessions")
    error = caught.value
    assert type(error) is expected
    assert (error.status, error.code, error.message) == (status, code, "it went wrong")
    assert error.details == {"field": "prompt"}
    assert error.retryable is (status >= 500)
    assert str(error) == f"[{code}] it went wrong"


def test_session_busy_is_a_conflict():
    with pytest.raises(ConflictError):
        client_answering(409, api_error("session_busy")).request("POST", "/v1/prompts", json={})


def test_an_error_answer_that_is_not_json_keeps_its_text():
    client = client_answering(502, text="<html>Bad Gateway</html>")
    with pytest.raises(ServerError) as caught:
        client.request("GET", "/v1/sessions")
    assert caught.value.code == "internal"
    assert caught.value.message == "<html>Bad Gateway</html>"
    assert caught.value.retryable


def test_an_unknown_status_without_a_code_is_named_by_its_status():
    with pytest.raises(VWMError) as caught:
        client_answering(418, {}).request("GET", "/x")
    assert caught.value.code == "http_418"
    assert caught.value.message == "418 I'm a teapot"


def test_a_success_that_is_not_json_is_a_protocol_error():
    with pytest.raises(ProtocolError):
        client_answering(200, text="hello").request("GET", "/v1/sessions")


def test_an_empty_answer_is_none():
    assert client_answering(204).request("DELETE", "/v1/admin/runtimes/x") is None


def test_a_closed_port_is_unreachable():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with (
        Client(f"http://127.0.0.1:{port}", "vwm_k_s", timeout=2) as client,
        pytest.raises(UnreachableError) as caught,
    ):
        client.request("GET", "/v1/sessions")
    assert caught.value.retryable
    assert f"127.0.0.1:{port}" in caught.value.message


def test_the_key_is_sent_as_a_bearer_token():
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"items": [], "next_cursor": None})

    with Client("http://cp.test/", "vwm_abc_def", transport=httpx.MockTransport(handle)) as client:
        list(client.sessions())
    assert seen[0].headers["authorization"] == "Bearer vwm_abc_def"
    assert str(seen[0].url) == "http://cp.test/v1/sessions"


def test_from_env(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("VWM_URL", "http://cp.example:9000")
    monkeypatch.setenv("VWM_API_KEY", "vwm_a_b")
    with Client.from_env() as client:
        assert client.base_url == "http://cp.example:9000"
    monkeypatch.delenv("VWM_API_KEY")
    with pytest.raises(ConfigError, match="VWM_API_KEY"):
        Client.from_env()
