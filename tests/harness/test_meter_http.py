"""The meter's own HTTP/1.1 on both legs (harness/meter/cli_side.py, provider_side.py), over real
sockets: what CLIs' clients send (chunked bodies, Expect, pipelining, HEAD, a client that leaves)
and what providers answer (lengths, chunks, answers ended by a close, connections closed while
idle, answers cut off), TLS with the environment's trust store, and a proxy from the environment.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import threading
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest
import trustme
import uvicorn

from fake_provider.app import FakeProvider, create_app
from fake_provider.samples import key_headers, sample_call
from fake_provider.server import bind_socket
from fake_provider.testing import RunningProvider, serve_in_thread
from harness.adapters.base import ProviderConfig
from harness.meter.encodings import MAX_INFLATED_BYTES, inflater
from harness.meter.provider_side import Origin
from harness.meter.service import Meter
from harness.meter.wire import WireApi

REAL_KEY = "sk-real-provider-key"


@pytest.fixture(scope="module")
def provider() -> Iterator[RunningProvider]:
    with serve_in_thread() as running:
        yield running


async def started_meter(
    base_url: str, env: dict[str, str] | None = None, *, connect_s: float = 2.0
) -> Meter:
    meter = Meter(
        ProviderConfig(base_url=base_url, api_key=REAL_KEY),
        env or {},
        api=WireApi.ANTHROPIC,
        connect_timeout_s=connect_s,
    )
    await meter.start()
    return meter


@pytest.fixture
async def meter(provider: RunningProvider) -> AsyncIterator[Meter]:
    meter = await started_meter(provider.base_url)
    yield meter
    await meter.close()


def request_bytes(meter: Meter, *, stream: bool = False, extra: bytes = b"") -> bytes:
    path, body = sample_call("anthropic", stream=stream)
    content = json.dumps(body).encode()
    headers = key_headers("anthropic", meter.provider_for_cli().api_key)
    lines = b"".join(f"{name}: {value}\r\n".encode() for name, value in headers.items())
    return (
        f"POST {path} HTTP/1.1\r\nhost: meter\r\ncontent-type: application/json\r\n".encode()
        + lines
        + extra
        + f"content-length: {len(content)}\r\n\r\n".encode()
        + content
    )


async def read_answers(reader: asyncio.StreamReader, count: int) -> list[tuple[int, bytes]]:
    """`count` HTTP/1.1 answers off one connection, each as (status, decoded body)."""
    answers = []
    for _ in range(count):
        status_line = await reader.readline()
        status = int(status_line.split()[1])
        headers: dict[bytes, bytes] = {}
        while (line := await reader.readline()) != b"\r\n":
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if status == 100:
            continue
        if b"content-length" in headers:
            body = await reader.readexactly(int(headers[b"content-length"]))
        else:
            assert headers.get(b"transfer-encoding") == b"chunked", headers
            body = b""
            while size := int((await reader.readline()).strip(), 16):
                body += await reader.readexactly(size)
                await reader.readline()
            await reader.readline()
        answers.append((status, body))
    return answers


async def test_pipelined_requests_are_answered_in_order_on_one_connection(meter: Meter) -> None:
    calls = meter.ledger.open("job", on_call=lambda call: None, on_stop=lambda: None)
    host, port = meter.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(request_bytes(meter) + request_bytes(meter, stream=True) + request_bytes(meter))
    answers = await asyncio.wait_for(read_answers(reader, 3), 10)
    writer.close()
    assert [status for status, _ in answers] == [200, 200, 200]
    assert json.loads(answers[0][1])["type"] == "message"
    assert b"event: message_stop" in answers[1][1]
    assert [c.streamed for c in calls.calls] == [False, True, False]
    assert all(c.outcome == "ok" for c in calls.calls)


async def test_a_chunked_request_body_and_expect_continue_are_served(meter: Meter) -> None:
    calls = meter.ledger.open("job", on_call=lambda call: None, on_stop=lambda: None)
    path, body = sample_call("anthropic", stream=False)
    content = json.dumps(body).encode()
    half = len(content) // 2
    chunked = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (
        half,
        content[:half],
        len(content) - half,
        content[half:],
    )
    headers = key_headers("anthropic", meter.provider_for_cli().api_key)
    head = (
        f"POST {path} HTTP/1.1\r\nhost: m\r\nexpect: 100-continue\r\n"
        "transfer-encoding: chunked\r\n".encode()
        + b"".join(f"{n}: {v}\r\n".encode() for n, v in headers.items())
        + b"\r\n"
    )
    host, port = meter.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(head)
    assert await asyncio.wait_for(reader.readline(), 5) == b"HTTP/1.1 100 Continue\r\n"
    assert await reader.readline() == b"\r\n"
    writer.write(chunked)
    [(status, answer)] = await asyncio.wait_for(read_answers(reader, 1), 10)
    writer.close()
    assert status == 200, answer
    [call] = calls.calls
    assert call.outcome == "ok" and call.usage.output > 0


async def test_bad_http_gets_400_and_a_body_too_large_413(meter: Meter, monkeypatch) -> None:
    import harness.meter.cli_side as cli_side

    host, port = meter.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"NOT HTTP AT ALL\r\n\r\n")
    status_line = await asyncio.wait_for(reader.readline(), 5)
    assert status_line.startswith(b"HTTP/1.1 400"), status_line
    assert await asyncio.wait_for(reader.read(), 5)  # the body, then the meter closes
    writer.close()

    monkeypatch.setattr(cli_side, "MAX_REQUEST_BYTES", 1000)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"POST /v1/messages HTTP/1.1\r\nhost: m\r\ncontent-length: 5000\r\n\r\n" + b"x" * 5000
    )
    status_line = await asyncio.wait_for(reader.readline(), 5)
    assert status_line.startswith(b"HTTP/1.1 413"), status_line
    writer.close()


async def test_head_and_side_endpoints_pass_through(
    meter: Meter, provider: RunningProvider
) -> None:
    headers = key_headers("anthropic", meter.provider_for_cli().api_key)
    async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
        listed = await http.get(meter.url + "/v1/models", headers=headers)
        head = await http.head(meter.url + "/v1/models", headers=headers)
        after = await http.get(meter.url + "/v1/models", headers=headers)  # same connection
    assert listed.status_code == 200 and listed.json()["data"]
    assert head.status_code in (200, 405) and head.content == b""
    assert after.status_code == 200 and after.json() == listed.json()


# -- providers that answer in other ways ---------------------------------------------------------

Answer = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return head + await reader.readexactly(length)


@pytest.fixture
async def raw_provider() -> AsyncIterator[Callable[[Answer], Awaitable[str]]]:
    servers: list[asyncio.Server] = []

    async def start(answer: Answer) -> str:
        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield start
    for server in servers:
        server.close()


ANTHROPIC_ANSWER = json.dumps(
    {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "m-1",
        "content": [{"type": "text", "text": "hi"}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 7, "output_tokens": 3},
    }
).encode()


# The answer whole, with its length: what a provider sends for a call that does not stream.
WHOLE_ANSWER = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
    % (len(ANTHROPIC_ANSWER), ANTHROPIC_ANSWER)
)


async def metered_call(meter: Meter) -> tuple[httpx.Response, list]:
    calls = meter.ledger.open("job", on_call=lambda call: None, on_stop=lambda: None)
    path, body = sample_call("anthropic", stream=False)
    async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
        answer = await http.post(
            meter.url + path,
            json=body,
            headers=key_headers("anthropic", meter.provider_for_cli().api_key),
        )
    meter.ledger.close(calls)
    return answer, calls.calls


async def test_an_answer_ended_by_the_providers_close_is_whole(raw_provider) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n")
        writer.write(ANTHROPIC_ANSWER)
        await writer.drain()
        writer.close()

    meter = await started_meter(await raw_provider(answer))
    try:
        answer_, calls = await metered_call(meter)
        assert answer_.status_code == 200 and answer_.content == ANTHROPIC_ANSWER
        [call] = calls
        assert call.outcome == "ok"
        assert (call.usage.input, call.usage.output) == (7, 3)
    finally:
        await meter.close()


async def test_a_connection_the_provider_closed_while_idle_is_not_reused(raw_provider) -> None:
    served = 0

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        await read_request(reader)
        served += 1
        writer.write(WHOLE_ANSWER)
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.close()  # keep-alive promised, then closed while idle

    meter = await started_meter(await raw_provider(answer))
    try:
        for _ in range(3):
            answer_, [call] = await metered_call(meter)
            assert answer_.status_code == 200 and call.outcome == "ok"
            await asyncio.sleep(0.2)
        assert served == 3
    finally:
        await meter.close()


async def test_a_kept_alive_connection_is_reused(raw_provider) -> None:
    connections = 0

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while True:
            try:
                await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            writer.write(WHOLE_ANSWER)
            await writer.drain()

    meter = await started_meter(await raw_provider(answer))
    try:
        for _ in range(4):
            answer_, [call] = await metered_call(meter)
            assert answer_.status_code == 200 and call.outcome == "ok"
        assert connections == 1
    finally:
        await meter.close()


async def test_an_answer_cut_off_midway_is_cut_off_for_the_cli_and_incomplete(
    raw_provider,
) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
            % (len(ANTHROPIC_ANSWER), ANTHROPIC_ANSWER[:20])
        )
        await writer.drain()
        writer.close()

    meter = await started_meter(await raw_provider(answer))
    try:
        with pytest.raises(httpx.RemoteProtocolError):
            await metered_call(meter)
        calls = meter.ledger.current
        assert calls is not None  # metered_call never got to close it
        for _ in range(100):
            if calls.calls:
                break
            await asyncio.sleep(0.02)
        [call] = calls.calls
        assert call.outcome == "incomplete" and call.status == 200
    finally:
        await meter.close()


async def test_a_cli_that_leaves_mid_stream_drops_the_providers_connection(
    raw_provider,
) -> None:
    provider_saw_close = asyncio.Event()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n")
        writer.write(b"transfer-encoding: chunked\r\n\r\n")
        event = b'event: message_start\ndata: {"type":"message_start","message":{}}\n\n'
        writer.write(b"%x\r\n%s\r\n" % (len(event), event))
        await writer.drain()
        if not await reader.read():  # EOF: the meter closed its side
            provider_saw_close.set()

    meter = await started_meter(await raw_provider(answer))
    logged: list = []
    calls = meter.ledger.open("job", on_call=logged.append, on_stop=lambda: None)
    try:
        host, port = meter.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(request_bytes(meter, stream=True))
        assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"HTTP/1.1 200")
        writer.close()
        await asyncio.wait_for(provider_saw_close.wait(), 5)
        for _ in range(100):
            if calls.calls:
                break
            await asyncio.sleep(0.02)
        [call] = calls.calls
        assert call.outcome == "incomplete" and call.status == 200
    finally:
        await meter.close()


# -- TLS and proxies -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def tls_provider(ca: trustme.CA, tmp_path_factory) -> Iterator[RunningProvider]:
    """The fake provider over TLS, its certificate from `ca`, for `localhost`."""
    directory: Path = tmp_path_factory.mktemp("tls")
    cert = ca.issue_cert("localhost")
    cert.private_key_and_cert_chain_pem.write_to_path(str(directory / "server.pem"))
    fake = FakeProvider()
    sock = bind_socket()
    config = uvicorn.Config(
        create_app(provider=fake),
        lifespan="off",
        log_level="warning",
        ssl_certfile=str(directory / "server.pem"),
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        threading.Event().wait(0.01)
    yield RunningProvider(f"https://localhost:{sock.getsockname()[1]}", fake)
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def ca_file(ca: trustme.CA, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("trust") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


async def test_tls_to_a_provider_trusted_through_ssl_cert_file(
    tls_provider: RunningProvider, ca_file: str
) -> None:
    meter = await started_meter(tls_provider.base_url, {"SSL_CERT_FILE": ca_file})
    try:
        answer, [call] = await metered_call(meter)
        assert answer.status_code == 200, answer.text
        assert call.outcome == "ok" and call.usage.output > 0
    finally:
        await meter.close()


async def test_tls_to_an_untrusted_provider_is_unreachable_and_says_why(
    tls_provider: RunningProvider,
) -> None:
    meter = await started_meter(tls_provider.base_url)  # certifi's CAs: not ours
    try:
        stopped = asyncio.Event()
        calls = meter.ledger.open("job", on_call=lambda call: None, on_stop=stopped.set)
        path, body = sample_call("anthropic", stream=False)
        async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
            answer = await http.post(
                meter.url + path,
                json=body,
                headers=key_headers("anthropic", meter.provider_for_cli().api_key),
            )
        assert answer.status_code == 502
        message = answer.json()["error"]["message"]
        assert "cannot be reached" in message and "CERTIFICATE_VERIFY_FAILED" in message, message
        assert calls.stop_reason is not None
        assert calls.stop_reason["code"] == "provider_unreachable"
    finally:
        await meter.close()


async def test_an_unreadable_trust_store_is_named(tls_provider: RunningProvider, tmp_path) -> None:
    meter = await started_meter(
        tls_provider.base_url, {"SSL_CERT_FILE": str(tmp_path / "missing.pem")}
    )
    try:
        answer, _ = await metered_call(meter)
        assert answer.status_code == 502
        assert "SSL_CERT_FILE" in answer.json()["error"]["message"]
    finally:
        await meter.close()


class ConnectProxy:
    """A forward proxy that serves CONNECT tunnels and absolute-form requests, and counts them."""

    def __init__(self, *, require_auth: bytes | None = None) -> None:
        self.tunnels: list[bytes] = []
        self.forwarded: list[bytes] = []
        self.require_auth = require_auth
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", 0)
        return f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        request_line = head.split(b"\r\n", 1)[0]
        method, target, _ = request_line.split(b" ")
        if self.require_auth and b"proxy-authorization: " + self.require_auth not in head:
            writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\ncontent-length: 0\r\n\r\n")
            await writer.drain()
            writer.close()
            return
        if method == b"CONNECT":
            self.tunnels.append(target)
            host, port = target.rsplit(b":", 1)
            up_reader, up_writer = await asyncio.open_connection(host.decode(), int(port))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
        else:
            self.forwarded.append(target)
            origin = httpx.URL(target.decode())
            up_reader, up_writer = await asyncio.open_connection(origin.host, origin.port)
            up_writer.write(head.replace(target, origin.raw_path, 1))

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


async def test_tls_through_a_connect_proxy_from_the_environment(
    tls_provider: RunningProvider, ca_file: str
) -> None:
    proxy = ConnectProxy(require_auth=b"Basic dXNlcjpwQHNz")  # user:p@ss
    address = await proxy.start()
    env = {"SSL_CERT_FILE": ca_file, "HTTPS_PROXY": f"http://user:p%40ss@{address}"}
    meter = await started_meter(tls_provider.base_url, env)
    try:
        answer, [call] = await metered_call(meter)
        assert answer.status_code == 200, answer.text
        assert call.outcome == "ok"
        port = tls_provider.base_url.rsplit(":", 1)[1]
        assert proxy.tunnels == [f"localhost:{port}".encode()]
    finally:
        await meter.close()
        proxy.close()


async def test_plain_http_through_a_proxy_and_no_proxy_bypass(
    provider: RunningProvider,
) -> None:
    proxy = ConnectProxy()
    address = await proxy.start()
    meter = await started_meter(provider.base_url, {"http_proxy": f"http://{address}"})
    try:
        answer, [call] = await metered_call(meter)
        assert answer.status_code == 200 and call.outcome == "ok"
        assert len(proxy.forwarded) == 1
        assert proxy.forwarded[0].startswith(provider.base_url.encode() + b"/v1/messages")
    finally:
        await meter.close()
    bypass = await started_meter(
        provider.base_url, {"http_proxy": f"http://{address}", "NO_PROXY": "127.0.0.1"}
    )
    try:
        answer, _ = await metered_call(bypass)
        assert answer.status_code == 200 and len(proxy.forwarded) == 1
    finally:
        await bypass.close()
        proxy.close()


async def test_a_proxy_that_refuses_the_tunnel_makes_the_provider_unreachable(
    tls_provider: RunningProvider, ca_file: str
) -> None:
    proxy = ConnectProxy(require_auth=b"Basic c29tZW9uZQ==")
    address = await proxy.start()
    env = {"SSL_CERT_FILE": ca_file, "HTTPS_PROXY": f"http://{address}"}
    meter = await started_meter(tls_provider.base_url, env)
    try:
        answer, _ = await metered_call(meter)
        assert answer.status_code == 502
        assert "407" in answer.json()["error"]["message"]
    finally:
        await meter.close()
        proxy.close()


@pytest.mark.parametrize("root", ["ftp://provider.example", "http://", "http://host:notaport"])
async def test_a_provider_url_that_is_no_http_url_is_unreachable(root: str) -> None:
    meter = await started_meter(root)
    try:
        answer, _ = await metered_call(meter)
        assert answer.status_code == 502
        assert "cannot be reached" in answer.json()["error"]["message"]
    finally:
        await meter.close()


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_a_compressed_answer_reaches_the_cli_as_sent_and_is_still_metered(
    raw_provider, stream: bool
) -> None:
    if stream:
        events = [
            {"type": "message_start", "message": {"model": "m-1", "usage": {"input_tokens": 7}}},
            {"type": "content_block_delta", "index": 0, "delta": {"text": "hi"}},
            {"type": "message_delta", "usage": {"output_tokens": 3}},
        ]
        plain = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
        content_type = b"text/event-stream"
    else:
        plain, content_type = ANTHROPIC_ANSWER, b"application/json"
    squeezed = gzip.compress(plain)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: %s\r\ncontent-encoding: gzip\r\n"
            b"content-length: %d\r\n\r\n" % (content_type, len(squeezed))
        )
        # In two pieces, cut inside the compressed stream.
        writer.write(squeezed[:10])
        await writer.drain()
        writer.write(squeezed[10:])
        await writer.drain()

    meter = await started_meter(await raw_provider(answer))
    try:
        answer_, [call] = await metered_call(meter)
        assert answer_.status_code == 200 and answer_.content == plain  # httpx inflated it
        assert call.outcome == "ok", call
        assert (call.usage.input, call.usage.output) == (7, 3)
    finally:
        await meter.close()


@pytest.mark.parametrize("wrapped", [True, False], ids=["zlib", "raw"])
def test_deflate_is_inflated_wrapped_or_raw(wrapped: bool) -> None:
    plain = b'{"usage": {"input_tokens": 1}}' * 100
    packer = zlib.compressobj(wbits=zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
    squeezed = packer.compress(plain) + packer.flush()
    inflate = inflater(b"Deflate")
    assert inflate is not None
    assert b"".join(inflate.feed(squeezed[i : i + 7]) for i in range(0, len(squeezed), 7)) == plain
    assert inflater(b"br") is None and inflater(b"identity") is None


def test_a_corrupt_or_enormous_compressed_answer_costs_nothing_more() -> None:
    broken = inflater(b"gzip")
    assert broken is not None
    assert broken.feed(b"not gzip at all") == b"" and broken.feed(gzip.compress(b"x")) == b""
    bomb = gzip.compress(b"\0" * (MAX_INFLATED_BYTES + 1_000_000))
    inflate = inflater(b"gzip")
    assert inflate is not None
    out = sum(len(inflate.feed(bomb[i : i + 65536])) for i in range(0, len(bomb), 65536))
    assert out == MAX_INFLATED_BYTES


async def test_a_connection_closed_while_idle_is_not_reused_even_before_the_loop_sees_it() -> None:
    """The provider closes an idle connection and the next call comes before the event loop
    has seen the FIN: only a look at the socket itself tells the connection is gone."""
    server = socket.create_server(("127.0.0.1", 0))
    close_now = threading.Event()
    connections = 0

    def serve() -> None:
        nonlocal connections
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            connections += 1
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    piece = conn.recv(65536)
                    if not piece:
                        break
                    data += piece
                if not data:
                    continue  # a connection that asked nothing
                head, _, rest = data.partition(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                while len(rest) < length:
                    rest += conn.recv(65536)
                conn.sendall(WHOLE_ANSWER)
                close_now.wait(10)  # keep-alive promised, then closed while idle

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.getsockname()[1]}"
    meter = await started_meter(url)
    try:
        first, _ = await metered_call(meter)
        assert first.status_code == 200
        [idle] = [c for conns in meter._pool._idle.values() for c in conns]
        assert idle.quiet and idle.reusable
        close_now.set()
        # Blocking on purpose: the loop must not run and see the FIN.
        time.sleep(0.3)  # noqa: ASYNC251
        assert idle.reusable and not idle.quiet
        fresh, _ = await meter._pool._connection(Origin.of(url))  # no loop step before its look
        assert fresh is not idle
        fresh.close()
        close_now.clear()
        second, [call] = await metered_call(meter)
        assert second.status_code == 200, second.text
        assert call.outcome == "ok" and connections == 3  # the first, `fresh`, the second call's
    finally:
        close_now.set()
        await meter.close()
        server.close()
