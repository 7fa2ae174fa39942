"""The meter between a CLI and its provider, over real HTTP: the fake provider upstream, an
HTTP client in the CLI's place. Each API streamed and not; the key swap; fail-fast; pass-through.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest

from eventing.model_calls import ModelCall
from fake_provider.ledger import key_id
from fake_provider.samples import API_NAMES, key_headers, sample_call
from fake_provider.script import DefaultScript, Failure, ModelRequest, Reply
from fake_provider.testing import RunningProvider, serve_in_thread
from harness.adapters.base import ProviderConfig
from harness.meter.calls import JobCalls
from harness.meter.service import Meter
from harness.meter.wire import WireApi

REAL_KEY = "sk-real-provider-key"


def _sample(api: str) -> Callable[[bool], tuple[str, dict[str, Any]]]:
    return lambda stream: sample_call(api, stream=stream)


anthropic, responses, chat, gemini = (_sample(api) for api in API_NAMES)
REQUESTS = {api: _sample(api) for api in API_NAMES}
auth = key_headers


@pytest.fixture(scope="module")
def provider() -> Iterator[RunningProvider]:
    with serve_in_thread() as running:
        yield running


class Job:
    """A job's calls as the runner sees them."""

    def __init__(self, meter: Meter) -> None:
        self.logged: list[ModelCall] = []
        self.stopped = asyncio.Event()
        self.calls: JobCalls = meter.ledger.open(
            "job-1", on_call=self.logged.append, on_stop=self.stopped.set
        )


async def started_meter(
    base_url: str | None,
    *,
    key: str = REAL_KEY,
    env: dict[str, str] | None = None,
    connect_s: float = 2.0,
) -> Meter:
    provider = ProviderConfig(base_url=base_url, api_key=key) if base_url else None
    meter = Meter(provider, env or {}, api=WireApi.ANTHROPIC, connect_timeout_s=connect_s)
    await meter.start()
    return meter


@pytest.fixture
async def meter(provider: RunningProvider) -> AsyncIterator[Meter]:
    meter = await started_meter(provider.base_url)
    yield meter
    await meter.close()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=20, trust_env=False) as client:
        yield client


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("api", list(REQUESTS))
async def test_a_call_is_forwarded_with_the_real_key_and_metered_as_billed(
    provider: RunningProvider, meter: Meter, http: httpx.AsyncClient, api: str, stream: bool
) -> None:
    job = Job(meter)
    path, body = REQUESTS[api](stream)
    before = len(provider.ledger.model_calls())
    placeholder = meter.provider_for_cli().api_key

    answer = await http.post(meter.url + path, json=body, headers=auth(api, placeholder))

    assert answer.status_code == 200, answer.text
    [entry] = provider.ledger.model_calls()[before:]
    assert entry.key_id == key_id(REAL_KEY)  # swapped: the provider never sees the placeholder
    assert entry.api == api and entry.stream == stream
    [call] = job.calls.calls
    assert job.logged == [call]
    billed = entry.usage.as_dict()
    assert call.usage.model_dump() == billed and sum(billed.values()) > 0
    assert (call.api, call.streamed, call.status, call.outcome, call.complete) == (
        api,
        stream,
        200,
        "ok",
        True,
    )
    assert call.seq == 1 and call.latency_ms > 0
    assert (call.ttft_ms is not None) == stream
    assert not job.stopped.is_set()


async def test_the_answer_reaches_the_cli_unchanged(
    provider: RunningProvider, meter: Meter, http: httpx.AsyncClient
) -> None:
    path, body = responses(True)
    direct = await http.post(
        provider.base_url + path, json=body, headers=auth("openai_responses", REAL_KEY)
    )
    metered = await http.post(
        meter.url + path,
        json=body,
        headers=auth("openai_responses", meter.provider_for_cli().api_key),
    )

    # The same events in the same order (ids and times differ between two calls).
    def kinds(text: str) -> list[str]:
        return [line for line in text.splitlines() if line.startswith("event:")]

    assert kinds(metered.text) == kinds(direct.text) and kinds(direct.text)
    assert metered.headers["content-type"] == direct.headers["content-type"]


async def test_a_stream_is_passed_on_as_it_comes_never_buffered(
    provider: RunningProvider, meter: Meter, http: httpx.AsyncClient
) -> None:
    """`sleep 2` streams for 2 s with its first chunk at once: that chunk must reach the CLI
    long before the stream ends."""
    job = Job(meter)
    path, body = anthropic(True)
    body["messages"] = [{"role": "user", "content": "sleep 2"}]
    started = time.monotonic()
    first: float | None = None
    async with http.stream(
        "POST",
        meter.url + path,
        json=body,
        headers=auth("anthropic", meter.provider_for_cli().api_key),
    ) as answer:
        async for _ in answer.aiter_raw():
            first = first or time.monotonic() - started
    total = time.monotonic() - started
    assert first is not None and total >= 1.9
    assert first < total - 1.0, (first, total)
    [call] = job.calls.calls
    assert call.ttft_ms is not None and call.ttft_ms < call.latency_ms - 1000


async def test_a_chat_stream_is_asked_for_its_usage(
    provider: RunningProvider, meter: Meter, http: httpx.AsyncClient
) -> None:
    """Without stream_options.include_usage a Chat stream carries no counts: the meter asks."""
    job = Job(meter)
    path, body = chat(True)
    assert "stream_options" not in body
    answer = await http.post(
        meter.url + path, json=body, headers=auth("openai_chat", meter.provider_for_cli().api_key)
    )
    assert answer.status_code == 200
    [call] = job.calls.calls
    assert call.complete and call.usage.output > 0


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"x-api-key": "sk-something-else"},
        {"authorization": "Bearer sk-other"},
        {"authorization": "Basic eDp5"},
    ],
    ids=["none", "other-x-api-key", "other-bearer", "basic"],
)
async def test_a_call_without_the_session_placeholder_is_refused_and_never_forwarded(
    provider: RunningProvider, meter: Meter, http: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    before = len(provider.ledger.entries())
    path, body = anthropic(False)
    answer = await http.post(meter.url + path, json=body, headers=headers)
    assert answer.status_code == 401
    assert answer.json()["error"]["type"] == "authentication_error"
    assert len(provider.ledger.entries()) == before


async def test_gemini_key_in_the_query_is_swapped(
    provider: RunningProvider, meter: Meter, http: httpx.AsyncClient
) -> None:
    Job(meter)
    path, body = gemini(False)
    placeholder = meter.provider_for_cli().api_key
    answer = await http.post(f"{meter.url}{path}?key={placeholder}", json=body)
    assert answer.status_code == 200, answer.text
    assert provider.ledger.model_calls()[-1].key_id == key_id(REAL_KEY)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def plain_tcp_server() -> Iterator[int]:
    """A port that accepts and speaks no TLS: a TLS handshake with it fails."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    server.close()


@pytest.mark.parametrize("where", ["refused", "dns", "tls"])
async def test_an_unreachable_provider_stops_the_job_at_once(
    http: httpx.AsyncClient, plain_tcp_server: int, where: str
) -> None:
    upstream = {
        "refused": f"http://127.0.0.1:{closed_port()}",
        "dns": "http://provider.vwm-does-not-exist.invalid",
        "tls": f"https://127.0.0.1:{plain_tcp_server}",
    }[where]
    meter = await started_meter(upstream)
    try:
        job = Job(meter)
        path, body = anthropic(True)
        started = time.monotonic()
        answer = await http.post(
            meter.url + path, json=body, headers=auth("anthropic", meter.provider_for_cli().api_key)
        )
        assert time.monotonic() - started < 3.5
        assert answer.status_code == 502
        assert "cannot be reached" in answer.json()["error"]["message"]
        assert job.stopped.is_set()
        assert job.calls.stop_reason is not None
        assert job.calls.stop_reason["code"] == "provider_unreachable"
        [call] = job.calls.calls
        assert call.outcome == "unreachable" and call.status is None
    finally:
        await meter.close()


class FailingScript(DefaultScript):
    def __init__(self, status: int, message: str) -> None:
        self.failure = Failure(status, message)

    def reply(self, request: ModelRequest) -> Reply | Failure:
        return self.failure


@pytest.mark.parametrize("status", [401, 403])
@pytest.mark.parametrize("api", list(REQUESTS))
async def test_a_refused_key_stops_the_job_with_the_providers_message(
    http: httpx.AsyncClient, api: str, status: int
) -> None:
    with serve_in_thread(FailingScript(status, "your key was revoked")) as failing:
        meter = await started_meter(failing.base_url)
        try:
            job = Job(meter)
            path, body = REQUESTS[api](True)
            answer = await http.post(
                meter.url + path, json=body, headers=auth(api, meter.provider_for_cli().api_key)
            )
            assert answer.status_code == status  # the CLI sees the provider's own answer
            assert job.calls.stop_reason is not None
            assert job.calls.stop_reason["code"] == "provider_auth_failed"
            assert "your key was revoked" in job.calls.stop_reason["message"]
            [call] = job.calls.calls
            assert (call.outcome, call.status, call.error) == (
                "http_error",
                status,
                "your key was revoked",
            )
        finally:
            await meter.close()


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_rate_limits_and_server_errors_pass_through_counted(
    http: httpx.AsyncClient, status: int
) -> None:
    with serve_in_thread(FailingScript(status, "slow down")) as failing:
        meter = await started_meter(failing.base_url)
        try:
            job = Job(meter)
            path, body = responses(True)
            for _ in range(2):
                answer = await http.post(
                    meter.url + path,
                    json=body,
                    headers=auth("openai_responses", meter.provider_for_cli().api_key),
                )
                assert answer.status_code == status
            assert not job.stopped.is_set() and job.calls.stop_reason is None
            assert [c.seq for c in job.calls.calls] == [1, 2]
            assert {c.outcome for c in job.calls.calls} == {"http_error"}
        finally:
            await meter.close()


async def test_side_endpoints_are_forwarded_but_not_model_calls(
    provider: RunningProvider, meter: Meter, http: httpx.AsyncClient
) -> None:
    job = Job(meter)
    answer = await http.get(
        meter.url + "/v1/models", headers=auth("openai_chat", meter.provider_for_cli().api_key)
    )
    assert answer.status_code == 200
    assert job.calls.calls == []


async def test_without_a_provider_each_call_goes_to_its_vendor_with_the_vendor_key() -> None:
    from harness.meter.upstream import Upstreams

    upstreams = Upstreams(
        None,
        "",
        {"ANTHROPIC_API_KEY": "a-key", "OPENAI_API_KEY": "o-key", "GOOGLE_API_KEY": "g-key"},
    )
    assert upstreams.for_path("/v1/messages").root == "https://api.anthropic.com"
    assert upstreams.for_path("/v1/messages").key == "a-key"
    assert upstreams.for_path("/v1/responses").key == "o-key"
    assert upstreams.for_path("/v1/chat/completions").root == "https://api.openai.com"
    google = upstreams.for_path("/v1beta/models/gemini-x:streamGenerateContent?alt=sse")
    assert (google.root, google.key) == ("https://generativelanguage.googleapis.com", "g-key")
    assert upstreams.configured is None


async def test_calls_outside_a_job_are_forwarded_and_belong_to_none(
    provider: RunningProvider, meter: Meter, http: httpx.AsyncClient
) -> None:
    path, body = chat(False)
    answer = await http.post(
        meter.url + path, json=body, headers=auth("openai_chat", meter.provider_for_cli().api_key)
    )
    assert answer.status_code == 200
    assert meter.ledger.current is None


async def test_the_provider_check_fails_a_refused_key_before_any_call(
    provider: RunningProvider,
) -> None:
    meter = await started_meter(provider.base_url, key="a-bad-key")
    try:
        job = Job(meter)
        await meter.check_provider(job.calls)
        assert job.stopped.is_set()
        assert job.calls.stop_reason is not None
        assert job.calls.stop_reason["code"] == "provider_auth_failed"
        assert "HTTP 401" in job.calls.stop_reason["message"]
        assert job.calls.calls == []  # no model call was made
    finally:
        await meter.close()


async def test_the_provider_check_fails_an_unreachable_provider() -> None:
    meter = await started_meter(f"http://127.0.0.1:{closed_port()}")
    try:
        job = Job(meter)
        await meter.check_provider(job.calls)
        assert job.calls.stop_reason is not None
        assert job.calls.stop_reason["code"] == "provider_unreachable"
    finally:
        await meter.close()


async def test_the_provider_check_passes_a_server_that_answers_anything_but_401_or_403(
    plain_tcp_server: int,
) -> None:
    """A model server without a model list answers an error; it is reachable all the same."""
    meter = await started_meter(f"http://127.0.0.1:{plain_tcp_server}")
    try:
        job = Job(meter)
        await meter.check_provider(job.calls)
        assert not job.stopped.is_set() and job.calls.stop_reason is None
    finally:
        await meter.close()


async def test_a_provider_that_passed_is_not_checked_again_for_a_while(
    provider: RunningProvider,
) -> None:
    """Once passed, the next job in the next 30 s is not checked again (one request)."""
    meter = await started_meter(provider.base_url)
    try:
        before = len(provider.ledger.entries())
        for _ in range(2):
            job = Job(meter)
            await meter.check_provider(job.calls)
            assert not job.stopped.is_set()
        assert len(provider.ledger.entries()) == before + 1
    finally:
        await meter.close()


async def test_the_meters_connections_send_at_once(meter: Meter) -> None:
    """asyncio sets TCP_NODELAY only on connections accepted from a socket made with
    IPPROTO_TCP; with protocol 0 every chunk after an answer's headers waited for the CLI's
    delayed ACK (about 40 ms a call, found by bench/meter_overhead.py)."""
    from fake_provider.server import bind_socket

    assert meter._server._sock.proto == socket.IPPROTO_TCP
    with bind_socket() as provider_socket:  # the fake provider's, for the same reason
        assert provider_socket.proto == socket.IPPROTO_TCP


def test_a_harness_whose_port_is_taken_says_so_and_exits(tmp_path) -> None:
    """The harness binds its port before its app (and the meter's port) starts."""
    import subprocess
    import sys

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        env = {
            "PATH": "/usr/bin:/bin",
            "VWM_WORKSPACE": str(tmp_path / "ws"),
            "VWM_HARNESS_PORT": str(port),
            "VWM_CLI_BIN": "/bin/true",
            "VWM_SESSION_TOKEN": "t",
        }
        done = subprocess.run(
            [sys.executable, "-m", "harness"], env=env, capture_output=True, text=True, timeout=60
        )
    assert done.returncode == 3, done.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
