"""The ledger over HTTP and in process, slow answers, cancellation, other paths, the command line."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest

from fake_provider import Failure, FakeProvider, ModelRequest, Reply, Usage, serve_in_thread
from fake_provider.ledger import key_id
from fake_provider.testing import RunningProvider
from tests.support.sse import iter_sse

CHAT = "/v1/chat/completions"
TOOLS = [{"type": "function", "function": {"name": "bash", "parameters": {}}}]


def chat(prompt: str, *, key: str = "test-key", stream: bool = False) -> dict[str, object]:
    return {
        "model": "m",
        "stream": stream,
        "stream_options": {"include_usage": True},
        "tools": TOOLS,
        "messages": [{"role": "user", "content": prompt}],
    }


def auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def test_ledger_over_http_sums_counted_usage_and_never_holds_keys(client: httpx.Client) -> None:
    secret = "sk-secret-key-123456"
    client.post(CHAT, json=chat("hi"), headers=auth(secret))
    client.post(CHAT, json={**chat("title"), "tools": []}, headers=auth(secret))
    client.post(CHAT, json=chat("hi"), headers=auth("bad-key"))
    ledger = client.get("/_fake/ledger")
    assert secret not in ledger.text
    data = ledger.json()
    assert [e["status"] for e in data["entries"]] == [200, 200, 401]
    assert [e["counted"] for e in data["entries"]] == [True, False, False]
    assert data["entries"][0]["key_id"] == key_id(secret)
    assert data["entries"][0]["tools_offered"] == ["bash"]
    assert data["entries"][0]["answer"] == {"kind": "text", "text": "hello from fake model"}
    assert data["counted_usage"] == {
        "input": 95,
        "cache_read": 5,
        "cache_write": 0,
        "output": 12,
        "reasoning": 3,
    }
    assert client.post("/_fake/reset").json() == {"reset": True}
    assert client.get("/_fake/ledger").json()["entries"] == []


def test_ledger_filters_by_key(client: httpx.Client, provider: RunningProvider) -> None:
    client.post(CHAT, json=chat("hi"), headers=auth("key-a"))
    client.post(CHAT, json=chat("hi"), headers=auth("key-b"))
    client.post(CHAT, json=chat("hi"), headers=auth("key-b"))
    assert len(provider.ledger.entries(key="key-b")) == 2
    assert provider.ledger.counted_usage(key="key-a") == Usage(95, 5, 0, 12, 3)


def test_sleep_sends_the_first_chunk_at_once_and_finishes_after_n_seconds(
    client: httpx.Client,
) -> None:
    started = time.monotonic()
    arrivals = []
    with client.stream("POST", CHAT, json=chat("sleep 1", stream=True), headers=auth("k")) as reply:
        for event in iter_sse(reply):
            if event.data != "[DONE]" and event.json["choices"]:
                arrivals.append(time.monotonic() - started)
    # arrivals[0] is the role chunk, [1] the first text: at once, then the rest spread over the
    # second (measured from the first, so a loaded machine's slow start does not count).
    assert arrivals[-1] - arrivals[1] >= 0.9, arrivals
    assert arrivals[1] < 2.0 and arrivals[-1] < 4.0, arrivals


def test_a_client_that_goes_away_leaves_an_unfinished_entry(
    client: httpx.Client, provider: RunningProvider
) -> None:
    with client.stream("POST", CHAT, json=chat("sleep 30", stream=True), headers=auth("k")) as r:
        next(iter_sse(r))
    (entry,) = provider.ledger.model_calls()
    assert entry.prompt == "sleep 30" and not entry.finished


def test_non_streaming_sleep_waits_before_answering(client: httpx.Client) -> None:
    started = time.monotonic()
    client.post(CHAT, json=chat("sleep 0.5"), headers=auth("k"))
    assert time.monotonic() - started >= 0.5


def test_unknown_paths_are_recorded_and_answered_404(
    client: httpx.Client, provider: RunningProvider
) -> None:
    reply = client.get("/v2/something")
    assert reply.status_code == 404 and "does not serve" in reply.json()["error"]["message"]
    assert [e.kind for e in provider.ledger.entries()] == ["unknown"]


def test_model_lists_speak_the_callers_api(client: httpx.Client) -> None:
    openai = client.get("/v1/models", headers=auth("k")).json()
    assert openai["object"] == "list" and openai["data"][0]["object"] == "model"
    anthropic = client.get("/v1/models", headers={"x-api-key": "k", "anthropic-version": "1"})
    assert anthropic.json()["data"][0]["type"] == "model"


def test_invalid_json_is_a_400_in_the_apis_format(client: httpx.Client) -> None:
    reply = client.post("/v1/messages", content=b"{not json", headers={"x-api-key": "k"})
    assert reply.status_code == 400 and reply.json()["type"] == "error"


class CountingScript:
    """A custom script: answers the call number, fails the third call with 529."""

    def __init__(self) -> None:
        self.calls = 0

    def reply(self, request: ModelRequest) -> Reply | Failure:
        self.calls += 1
        if self.calls == 3:
            return Failure(529, "Overloaded")
        return Reply(text=f"call {self.calls}", usage=Usage(input=1, output=2))


def test_scripts_are_pluggable() -> None:
    with serve_in_thread(CountingScript()) as running, httpx.Client() as http:
        url = f"{running.base_url}/v1/messages"
        body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
        headers = {"x-api-key": "k"}
        replies = [http.post(url, json=body, headers=headers) for _ in range(3)]
    assert [r.json()["content"][0]["text"] for r in replies[:2]] == ["call 1", "call 2"]
    assert replies[0].json()["usage"]["input_tokens"] == 1
    assert replies[2].status_code == 529
    assert replies[2].json()["error"]["type"] == "overloaded_error"


def test_the_app_can_be_built_around_an_existing_provider() -> None:
    provider = FakeProvider()
    with serve_in_thread(provider=provider) as running:
        assert running.provider is provider and running.ledger is provider.ledger


@pytest.mark.timeout(30)
def test_python_dash_m_prints_its_url_and_serves() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "fake_provider", "--port", "0", "--log-level", "warning"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("fake provider listening on http://127.0.0.1:")
        url = line.split()[-1]
        for _ in range(100):
            try:
                assert httpx.get(f"{url}/_fake/ledger").json()["entries"] == []
                break
            except httpx.ConnectError:
                time.sleep(0.05)
        else:
            pytest.fail("the server never answered")
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
