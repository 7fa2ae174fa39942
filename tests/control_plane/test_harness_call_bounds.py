"""Every call to a harness is bounded: the harness client against harnesses that hang in the ways
a real one can (accepts the connection and stays silent, answers headers then stalls, trickles,
an event stream that goes quiet), over real sockets. And the opposite: a stream that only sends
heartbeats for a long while is alive and is followed to its end."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from eventing.harness_api import BootstrapReport
from functions.harness_client import HarnessClient, HarnessUnavailable
from functions.settings import HarnessCallSettings
from tests.support.raw_server import raw_server, silent

BOUNDS = HarnessCallSettings(connect_s=0.5, call_s=0.5, stream_idle_s=0.6, clock_skew_s=0.0)
SLACK_S = 1.0  # scheduling noise on a busy machine
# Answers that fit the harness's API (`eventing.harness_api`): the client parses every answer.
BOOTSTRAPPED = {"changed": ["session_repo"], "unchanged": []}
STARTED = {"job_id": "j1", "status": "running", "created_at": 1.0, "last_seq": 0}


def _json_body(answer: dict[str, object]) -> bytes:
    """Headers that end the head, then `answer` as the JSON body."""
    body = json.dumps(answer).encode()
    return b"content-length: %d\r\n\r\n%s" % (len(body), body)


def headers_then_stall(conn: socket.socket, _: bytearray) -> None:
    conn.sendall(
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{"
    )
    time.sleep(30)


def trickle(conn: socket.socket, _: bytearray) -> None:
    """A byte every 0.2 s: each read is quick, the whole answer never comes."""
    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n")
    for _ in range(150):
        conn.sendall(b" ")
        time.sleep(0.2)


def sse_head(conn: socket.socket) -> None:
    conn.sendall(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    )


def chunk(conn: socket.socket, text: str) -> None:
    data = text.encode()
    conn.sendall(f"{len(data):x}\r\n".encode() + data + b"\r\n")


EVENT = 'id: 1\nevent: job_started\ndata: {"seq":1}\n\n'


def one_event_then_silence(conn: socket.socket, _: bytearray) -> None:
    sse_head(conn)
    chunk(conn, EVENT)
    time.sleep(30)


def heartbeats_then_the_end(conn: socket.socket, _: bytearray) -> None:
    """Only heartbeats for five silence bounds, then the last event and the end of the stream."""
    sse_head(conn)
    chunk(conn, EVENT)
    until = time.monotonic() + 5 * BOUNDS.stream_idle_s
    while time.monotonic() < until:
        chunk(conn, ": heartbeat\n\n")
        time.sleep(0.1)
    chunk(conn, 'id: 2\nevent: job_finished\ndata: {"seq":2}\n\n')
    conn.sendall(b"0\r\n\r\n")


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False) as pool:
        yield pool


def client(url: str, http: httpx.AsyncClient) -> HarnessClient:
    return HarnessClient(url, "token", BOUNDS, http)


@pytest.mark.parametrize("handler", [silent, headers_then_stall, trickle])
async def test_a_call_to_a_harness_that_does_not_answer_ends_within_its_bound(
    handler, http
) -> None:
    with raw_server(handler) as server:
        url = server.url
        started = time.monotonic()
        with pytest.raises(HarnessUnavailable) as caught:
            await client(url, http).files.list(".")
        took = time.monotonic() - started

    assert took < BOUNDS.connect_s + BOUNDS.call_s + SLACK_S
    assert caught.value.timed_out and caught.value.retryable
    assert (caught.value.status_code, caught.value.code) == (503, "harness_unavailable")
    assert "try again" in caught.value.message


async def test_a_long_call_gets_its_own_longer_bound(http) -> None:
    """Bootstrap clones repositories: the ordinary bound would cut it off."""
    bounds = HarnessCallSettings(connect_s=0.5, call_s=0.2, bootstrap_s=1.5)

    def slow_answer(conn: socket.socket, _: bytearray) -> None:
        time.sleep(0.8)
        conn.sendall(b"HTTP/1.1 200 OK\r\n" + _json_body(BOOTSTRAPPED))

    with raw_server(slow_answer) as server:
        url = server.url
        report = await HarnessClient(url, "token", bounds, http).bootstrap({})
        assert report == BootstrapReport(changed=["session_repo"], unchanged=[])
        with pytest.raises(HarnessUnavailable):
            await HarnessClient(url, "token", bounds, http).job("job-1")


async def test_a_stream_that_falls_silent_is_a_dead_harness(http) -> None:
    received = []
    with raw_server(one_event_then_silence) as server:
        url = server.url
        started = time.monotonic()
        with pytest.raises(HarnessUnavailable) as caught:
            async for frame in client(url, http).events("job-1"):
                received.append(frame.event)
        took = time.monotonic() - started

    assert received == ["job_started"]
    assert took < BOUNDS.stream_idle_s + SLACK_S
    assert caught.value.timed_out
    assert "no heartbeat" in caught.value.message


async def test_a_stream_that_sends_heartbeats_is_alive_however_long_it_runs(http) -> None:
    with raw_server(heartbeats_then_the_end) as server:
        url = server.url
        started = time.monotonic()
        received = [frame.event async for frame in client(url, http).events("job-1")]

    assert received == ["job_started", "job_finished"]
    assert time.monotonic() - started > 4 * BOUNDS.stream_idle_s  # far longer than the bound


async def test_a_job_start_carries_a_deadline_on_the_callers_clock(http) -> None:
    requests: list[bytes] = []
    bounds = HarnessCallSettings(connect_s=1.0, call_s=2.0, clock_skew_s=30.0)

    def record(conn: socket.socket, head: bytearray) -> None:
        _, _, body = head.partition(b"\r\n\r\n")
        conn.settimeout(2)
        while not body.endswith(b"}"):
            body += conn.recv(65536)
        requests.append(body)
        conn.sendall(b"HTTP/1.1 202 Accepted\r\n" + _json_body(STARTED))

    with raw_server(record) as server:
        url = server.url
        before = time.time()
        await HarnessClient(url, "token", bounds, http).start_job({"prompt": "hi", "job_id": "j1"})

    body = json.loads(requests[0])
    assert body["mode"] == "async" and body["job_id"] == "j1"
    assert before + 33.0 - 0.001 <= body["not_after"] <= time.time() + 33.0 + 0.001
