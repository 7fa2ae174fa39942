"""The harness client's transport: a connection pool per origin, closed when idle
(functions.origin_pools), against real HTTP servers on loopback."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from functions.origin_pools import PoolPerOrigin


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.connections = 0  # TCP connections accepted
        self.open = 0  # of those, still open
        self.release = threading.Event()  # lets /stream finish

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so connections are pooled
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.connections += 1
        self.server.open += 1

    def finish(self) -> None:
        self.server.open -= 1
        super().finish()

    def do_GET(self) -> None:
        if self.path == "/stream":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"5\r\nfirst\r\n")
            self.wfile.flush()
            self.server.release.wait(10)
            self.wfile.write(b"4\r\nlast\r\n0\r\n\r\n")
            return
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def servers() -> Iterator[list[_Server]]:
    made = [_Server(), _Server()]
    for server in made:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield made
    for server in made:
        server.release.set()
        server.shutdown()
        server.server_close()


class Clock:
    def __init__(self) -> None:
        # Far below any real monotonic time, so a time read from the real clock instead of
        # this one (a response closed at "now") shows as a pool that never goes idle.
        self.now = -1e9

    def __call__(self) -> float:
        return self.now


def client(clock: Clock, idle_close_s: float = 30.0) -> tuple[httpx.AsyncClient, PoolPerOrigin]:
    transport = PoolPerOrigin(httpx.AsyncHTTPTransport, idle_close_s=idle_close_s, clock=clock)
    return httpx.AsyncClient(transport=transport), transport


async def wait_for(condition: object, what: str) -> None:
    import asyncio

    for _ in range(200):
        if condition():  # type: ignore[operator]
            return
        await asyncio.sleep(0.01)
    raise AssertionError(what)


async def test_each_origin_has_its_own_pool_and_reuses_its_connection(
    servers: list[_Server],
) -> None:
    http, transport = client(Clock())
    async with http:
        for _ in range(3):
            for server in servers:
                response = await http.get(server.url + "/")
                assert response.text == "ok"
        assert transport.origins == 2
        # Three calls each, one kept-alive connection each: the pools are not shared.
        assert [s.connections for s in servers] == [1, 1]


async def test_a_pool_idle_past_the_limit_is_closed_with_its_connections(
    servers: list[_Server],
) -> None:
    clock = Clock()
    first, second = servers
    http, transport = client(clock, idle_close_s=30)
    async with http:
        await http.get(first.url + "/")
        clock.now += 20
        await http.get(second.url + "/")
        clock.now += 15  # first idle 35 s, second 15 s
        await http.get(second.url + "/")
        assert transport.origins == 1
        await wait_for(lambda: first.open == 0, "the idle pool's connection was not closed")
        assert second.open == 1
        # The next call to the forgotten origin makes a new pool and a new connection.
        assert (await http.get(first.url + "/")).text == "ok"
        assert first.connections == 2 and transport.origins == 2


async def test_an_open_stream_keeps_its_pool_however_long_it_lasts(
    servers: list[_Server],
) -> None:
    clock = Clock()
    streaming, other = servers
    http, transport = client(clock, idle_close_s=30)
    async with http, http.stream("GET", streaming.url + "/stream") as response:
        chunks = response.aiter_bytes()
        assert await chunks.__anext__() == b"first"
        clock.now += 120
        await http.get(other.url + "/")  # a sweep runs: the stream's pool stays
        assert transport.origins == 2
        streaming.release.set()
        assert b"".join([chunk async for chunk in chunks]) == b"last"
        await response.aclose()
        clock.now += 31  # now it has been idle past the limit since the stream closed
        await http.get(other.url + "/")
        assert transport.origins == 1


async def test_a_refused_call_leaves_no_pool_pinned(servers: list[_Server]) -> None:
    clock = Clock()
    dead = servers[0]
    url = dead.url
    dead.shutdown()
    dead.server_close()
    http, transport = client(clock, idle_close_s=30)
    async with http:
        with pytest.raises(httpx.ConnectError):
            await http.get(url + "/")
        clock.now += 31
        await http.get(servers[1].url + "/")
        assert transport.origins == 1  # the refused origin's pool went at the sweep


async def test_closing_the_client_closes_every_pool(servers: list[_Server]) -> None:
    http, transport = client(Clock())
    async with http:
        for server in servers:
            await http.get(server.url + "/")
    assert transport.origins == 0
    for server in servers:
        await wait_for(lambda s=server: s.open == 0, "a connection outlived the client")
