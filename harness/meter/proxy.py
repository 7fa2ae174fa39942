"""The meter: a loopback HTTP proxy between the CLI and its model provider.

Every request the CLI sends to its provider comes here (the adapters point the CLI's base URL at
`MeterServer.url`). The proxy checks the session's placeholder key and swaps in the real one
(`credentials.KeySwap`), forwards the request to the provider and streams the answer back chunk
by chunk as it arrives (never buffered: the CLI's time to first token is the provider's), reading
each model call's usage from the bytes as they pass (`usage.UsageReader`). Each model call
becomes a `ModelCall` for the open job (`calls.CallLedger`).

It fails fast where a CLI would not: a provider that cannot be reached (refused, DNS, TLS,
connect timeout) or that refuses the key (401/403) stops the job at once with
`provider_unreachable` or `provider_auth_failed` and the provider's message. 429 and 5xx answers
pass through for the CLI to retry as it does, and are counted.

A raw ASGI app rather than a framework's: it does one thing on the hot path of every model call,
and each layer it skips is latency the CLI would otherwise wait for.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import uvicorn

from eventing.agent_events import Usage
from eventing.model_calls import CallOutcome, ModelCall
from harness.meter.calls import (
    BUDGET_EXCEEDED,
    PROVIDER_AUTH_FAILED,
    PROVIDER_UNREACHABLE,
    CallLedger,
    JobCalls,
)
from harness.meter.credentials import KeySwap
from harness.meter.upstream import Upstreams
from harness.meter.usage import UsageReader
from harness.meter.vendor_errors import (
    MAX_ERROR_BYTES,
    STATUS,
    Refusal,
    error_body,
    provider_message,
)
from harness.meter.wire import MAX_REQUEST_BYTES, WireApi, request_facts, wire_api

logger = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

# Per hop, never forwarded (RFC 9110 7.6.1), plus what the client library sets itself.
_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
        b"accept-encoding",
    }
)
_RESPONSE_DROPPED = frozenset(
    {b"connection", b"keep-alive", b"transfer-encoding", b"proxy-connection", b"trailer"}
)
_AUTH_REFUSED = frozenset({401, 403})


class MeterProxy:
    def __init__(
        self,
        upstreams: Upstreams,
        keys: KeySwap,
        ledger: CallLedger,
        client: httpx.AsyncClient,
    ) -> None:
        self._upstreams = upstreams
        self._keys = keys
        self._ledger = ledger
        self._client = client

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        started = time.monotonic()
        started_at = time.time()
        method: str = scope["method"]
        api = wire_api(method, scope["path"])
        body = await _read_body(receive)
        if body is None:
            await _answer(send, 413, b'{"error":{"message":"request too large"}}')
            return
        upstream = self._upstreams.for_path(scope["path"])
        swapped = self._keys.swap(scope["headers"], scope.get("query_string", b""), upstream.key)
        if swapped is None:
            message = "this is the session's model meter: use the key the session gave the CLI"
            await _answer(
                send, STATUS[Refusal.WRONG_KEY], error_body(api, Refusal.WRONG_KEY, message)
            )
            return
        headers, query = swapped
        job = self._ledger.current
        if api is None:
            await self._forward(upstream.root, scope, send, method, headers, query, body, None, job)
            return
        facts = request_facts(api, body, path=scope["path"])
        if job is not None and job.budget is not None:
            refusal = await job.budget.admit()
            if refusal is not None:
                await _answer(
                    send, STATUS[Refusal.BUDGET], error_body(api, Refusal.BUDGET, refusal)
                )
                job.add(
                    _call(
                        job,
                        api,
                        facts.model,
                        facts.streamed,
                        started,
                        started_at,
                        STATUS[Refusal.BUDGET],
                        "refused",
                        error=refusal,
                    )
                )
                job.stop(BUDGET_EXCEEDED, refusal)
                return
        if api is WireApi.OPENAI_CHAT and facts.streamed:
            body = _with_stream_usage(body)
        meter = _CallMeter(api, facts.model, facts.streamed, started, started_at)
        await self._forward(upstream.root, scope, send, method, headers, query, body, meter, job)

    async def _forward(
        self,
        root: str,
        scope: Scope,
        send: Send,
        method: str,
        headers: list[tuple[bytes, bytes]],
        query: bytes,
        body: bytes,
        meter: _CallMeter | None,
        job: JobCalls | None,
    ) -> None:
        url = root + scope.get("raw_path", scope["path"].encode()).decode("latin-1")
        if query:
            url += "?" + query.decode("latin-1")
        outgoing = [(name, value) for name, value in headers if name.lower() not in _HOP_BY_HOP]
        # Usage is read off the bytes: the answer must come uncompressed.
        outgoing.append((b"accept-encoding", b"identity"))
        request = self._client.build_request(method, url, headers=outgoing, content=body)
        try:
            response = await self._client.send(request, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.UnsupportedProtocol) as exc:
            message = f"the model provider at {root} cannot be reached: {_reason(exc)}"
            await _answer(
                send, 502, error_body(meter.api if meter else None, Refusal.UNREACHABLE, message)
            )
            if job is not None:
                if meter is not None:
                    job.add(meter.unreachable(job, message))
                job.stop(PROVIDER_UNREACHABLE, message)
            return
        except httpx.TransportError as exc:
            message = f"the model provider at {root} failed: {_reason(exc)}"
            await _answer(
                send, 502, error_body(meter.api if meter else None, Refusal.UNREACHABLE, message)
            )
            if job is not None and meter is not None:
                job.add(meter.unreachable(job, message, outcome="incomplete"))
            return
        error_text = bytearray()
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": [
                        (name, value)
                        for name, value in response.headers.raw
                        if name.lower() not in _RESPONSE_DROPPED
                    ],
                }
            )
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                if meter is not None:
                    meter.feed(chunk)
                if response.status_code >= 400 and len(error_text) <= MAX_ERROR_BYTES:
                    error_text += chunk
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except (httpx.TransportError, OSError) as exc:
            logger.info("a model answer was cut off", extra={"reason": _reason(exc)})
        finally:
            await response.aclose()
        said = provider_message(bytes(error_text)) if response.status_code >= 400 else None
        if meter is not None and job is not None:
            job.add(meter.finish(job, response.status_code, said))
        # Only a model call's refusal counts: a side endpoint may want what a model call does
        # not (and the provider check at the job's start asks the model list itself).
        if response.status_code in _AUTH_REFUSED and job is not None and meter is not None:
            job.stop(
                PROVIDER_AUTH_FAILED,
                f"the model provider refused the key (HTTP {response.status_code}): "
                f"{said or 'no message'}; check the runtime's credential",
            )


class _CallMeter:
    """One model call on its way: its usage reader and its clock."""

    def __init__(
        self, api: WireApi, model: str | None, streamed: bool, started: float, started_at: float
    ) -> None:
        self.api = api
        self.model = model
        self.streamed = streamed
        self.started = started
        self.started_at = started_at
        self.reader = UsageReader(api, streamed)
        self.first_content: float | None = None

    def feed(self, chunk: bytes) -> None:
        self.reader.feed(chunk)
        if self.first_content is None and self.reader.content_started:
            self.first_content = time.monotonic()

    def finish(self, job: JobCalls, status: int, message: str | None) -> ModelCall:
        read = self.reader.finish()
        ok = 200 <= status < 300
        outcome: CallOutcome = (
            "ok" if ok and read.complete else "http_error" if not ok else "incomplete"
        )
        return ModelCall(
            seq=job.next_seq(),
            api=self.api.value,
            model=read.model or self.model,
            streamed=self.streamed,
            status=status,
            outcome=outcome,
            usage=read.usage,
            complete=read.complete,
            started_at=self.started_at,
            latency_ms=_ms_since(self.started),
            ttft_ms=(
                round((self.first_content - self.started) * 1000, 3)
                if self.first_content is not None
                else None
            ),
            error=message,
        )

    def unreachable(
        self, job: JobCalls, message: str, *, outcome: CallOutcome = "unreachable"
    ) -> ModelCall:
        return _call(
            job,
            self.api,
            self.model,
            self.streamed,
            self.started,
            self.started_at,
            None,
            outcome,
            error=message,
        )


def _call(
    job: JobCalls,
    api: WireApi,
    model: str | None,
    streamed: bool,
    started: float,
    started_at: float,
    status: int | None,
    outcome: CallOutcome,
    *,
    error: str | None,
) -> ModelCall:
    return ModelCall(
        seq=job.next_seq(),
        api=api.value,
        model=model,
        streamed=streamed,
        status=status,
        outcome=outcome,
        usage=Usage(),
        complete=False,
        started_at=started_at,
        latency_ms=_ms_since(started),
        ttft_ms=None,
        error=error,
    )


def _ms_since(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 3)


def _reason(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


def _with_stream_usage(body: bytes) -> bytes:
    """A streamed Chat Completions request asking for the usage chunk: without
    ``stream_options.include_usage`` the stream carries no token counts at all. The extra
    chunk (empty `choices`) is part of the API; clients that asked for it see no change."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return body
    if not isinstance(document, dict):
        return body
    options = document.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        return body
    document["stream_options"] = {
        **(options if isinstance(options, dict) else {}),
        "include_usage": True,
    }
    return json.dumps(document, separators=(",", ":")).encode()


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size >= MAX_REQUEST_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _answer(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


# -- serving -----------------------------------------------------------------------------------


class _QuietServer(uvicorn.Server):
    """The harness's own server handles the process's signals; this one must not take them."""

    @contextlib.contextmanager
    def capture_signals(self):  # type: ignore[no-untyped-def]
        yield


class MeterServer:
    """The meter on a loopback port of its own, in the harness's event loop: only processes on
    this machine (the CLI) reach it, never the network the harness serves."""

    def __init__(self, proxy: MeterProxy, host: str = "127.0.0.1") -> None:
        # TCP's protocol number, not 0: asyncio sets TCP_NODELAY only on connections accepted
        # from such a socket. Without it, each chunk after the answer's headers waits for the
        # CLI's delayed ACK (40 ms on Linux) before it leaves (bench/meter_overhead.py).
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.bind((host, 0))
        self._sock.listen(256)
        port = self._sock.getsockname()[1]
        self.url = f"http://{host}:{port}"
        config = uvicorn.Config(
            proxy,
            lifespan="off",
            access_log=False,
            log_level="warning",
            timeout_graceful_shutdown=2,
            timeout_keep_alive=60,
        )
        self._server = _QuietServer(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve(sockets=[self._sock]), name="meter")
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises what stopped it
                raise RuntimeError("the model meter stopped while starting")
            await asyncio.sleep(0.005)

    async def close(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task
        self._sock.close()
