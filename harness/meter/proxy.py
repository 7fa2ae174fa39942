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

The two legs are the meter's own HTTP/1.1 on the C parser (`cli_side`, `provider_side`): it
does one thing on the hot path of every model call, and each layer it skips is latency the CLI
would otherwise wait for.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

from eventing.agent_events import Usage
from eventing.model_calls import CallOutcome, ModelCall
from harness.meter.calls import (
    BUDGET_EXCEEDED,
    PROVIDER_AUTH_FAILED,
    PROVIDER_UNREACHABLE,
    CallLedger,
    JobCalls,
)
from harness.meter.cli_side import CliConnection, CliRequest
from harness.meter.credentials import KeySwap
from harness.meter.encodings import BodyDecoder
from harness.meter.provider_side import (
    Origin,
    ProviderConnection,
    ProviderFailed,
    ProviderPool,
    ProviderUnreachable,
)
from harness.meter.upstream import Upstreams
from harness.meter.usage import UsageReader
from harness.meter.vendor_errors import (
    MAX_ERROR_BYTES,
    STATUS,
    Refusal,
    error_body,
    provider_message,
)
from harness.meter.wire import RequestFacts, WireApi, request_facts, wire_api

logger = logging.getLogger(__name__)

# Per hop, never forwarded (RFC 9110 7.6.1), plus what the meter sets itself: the provider's
# host, the body's length, and an identity encoding (usage is read off the bytes).
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
        b"expect",
    }
)
_AUTH_REFUSED = frozenset({401, 403})


class MeterProxy:
    def __init__(
        self, upstreams: Upstreams, keys: KeySwap, ledger: CallLedger, pool: ProviderPool
    ) -> None:
        self._upstreams = upstreams
        self._keys = keys
        self._ledger = ledger
        self._pool = pool

    async def __call__(self, request: CliRequest, cli: CliConnection) -> None:
        started = time.monotonic()
        started_at = time.time()
        api = wire_api(request.method, request.path)
        upstream = self._upstreams.for_path(request.path)
        swapped = self._keys.swap(request.headers, request.query, upstream.key)
        if swapped is None:
            message = "this is the session's model meter: use the key the session gave the CLI"
            cli.answer(STATUS[Refusal.WRONG_KEY], error_body(api, Refusal.WRONG_KEY, message))
            return
        headers, query = swapped
        job = self._ledger.current
        body = request.body
        meter: _CallMeter | None = None
        facts: RequestFacts | None = None
        if api is not None:
            if job is not None and job.budget is not None:
                refusal = await job.budget.admit()
                if refusal is not None:
                    facts = request_facts(api, body, path=request.path)
                    cli.answer(STATUS[Refusal.BUDGET], error_body(api, Refusal.BUDGET, refusal))
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
            if api is WireApi.OPENAI_CHAT and _may_want_stream_usage(body):
                facts = request_facts(api, body, path=request.path)
                if facts.streamed:
                    body = _with_stream_usage(body)
            meter = _CallMeter(api, request, started, started_at, facts)
        target = request.target.partition(b"?")[0] + (b"?" + query if query else b"")
        await self._forward(upstream.root, request, target, headers, body, cli, meter, job)

    async def _forward(
        self,
        root: str,
        request: CliRequest,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        cli: CliConnection,
        meter: _CallMeter | None,
        job: JobCalls | None,
    ) -> None:
        lines = b"".join(
            b"%s: %s\r\n" % (name, value) for name, value in headers if name not in _HOP_BY_HOP
        )
        # Usage is read off the bytes: the answer must come uncompressed.
        lines += b"accept-encoding: identity\r\n"
        relay = _Relay(cli, meter)
        try:
            origin = Origin.of(root)
            connection = await self._pool.send(origin, request.method, target, lines, body, relay)
        except ProviderUnreachable as exc:
            message = f"the model provider at {root} cannot be reached: {exc}"
            cli.answer(502, error_body(meter.api if meter else None, Refusal.UNREACHABLE, message))
            if job is not None:
                if meter is not None:
                    job.add(meter.unreachable(job, message))
                job.stop(PROVIDER_UNREACHABLE, message)
            return
        except ProviderFailed as exc:
            message = f"the model provider at {root} failed: {exc}"
            cli.answer(502, error_body(meter.api if meter else None, Refusal.UNREACHABLE, message))
            if job is not None and meter is not None:
                job.add(meter.unreachable(job, message, outcome="incomplete"))
            return
        relay.connection = connection
        cli.flow = relay
        cli.on_gone = relay.cli_left
        if cli.gone:
            relay.cli_left()
        await relay.done
        if relay.status is None:  # the CLI left before the provider answered
            return
        status = relay.status
        said = provider_message(relay.error_text) if status >= 400 else None
        if meter is not None and job is not None:
            job.add(meter.finish(job, status, said))
        # Only a model call's refusal counts: a side endpoint may want what a model call does
        # not (and the provider check at the job's start asks the model list itself).
        if status in _AUTH_REFUSED and job is not None and meter is not None:
            job.stop(
                PROVIDER_AUTH_FAILED,
                f"the model provider refused the key (HTTP {status}): "
                f"{said or 'no message'}; check the runtime's credential",
            )


class _Relay:
    """A provider's answer on its way to the CLI, read by the call's meter as it passes.
    Called from the provider connection's socket callbacks, chunk by chunk."""

    def __init__(self, cli: CliConnection, meter: _CallMeter | None) -> None:
        self._cli = cli
        self._meter = meter
        self.status: int | None = None
        self.connection: ProviderConnection | None = None
        self._error_raw = bytearray()
        self._headers: list[tuple[bytes, bytes]] = []
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @property
    def error_text(self) -> bytes:
        """The start of an error answer's body, unframed and inflated."""
        return BodyDecoder(self._headers).feed(bytes(self._error_raw))[:MAX_ERROR_BYTES]

    def head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        self.status = status
        self._headers = headers
        self._cli.start(status, reason, headers)
        if self._meter is not None:
            self._meter.answer_began(headers)

    def body(self, data: bytes) -> None:
        self._cli.write(data)
        self._read(data)

    def end(self, data: bytes) -> None:
        self._cli.finish(data)
        self._read(data)
        self._settle()

    def _read(self, data: bytes) -> None:
        if self._meter is not None and data:
            self._meter.feed(data)
        if (
            self.status is not None
            and self.status >= 400
            and len(self._error_raw) <= 2 * MAX_ERROR_BYTES  # framing and all
        ):
            self._error_raw += data

    def broken(self, reason: str) -> None:
        logger.info("a model answer was cut off", extra={"reason": reason})
        self._cli.cut_off()
        self._settle()

    def cli_left(self) -> None:
        """The CLI closed its connection: the rest of the answer goes nowhere, and the
        provider connection with it."""
        if self.done.done():
            return
        if self.connection is not None:
            self.connection.abandon()
        self._settle()

    # Flow: the CLI reads slower than the provider sends.
    def pause_reading(self) -> None:
        if self.connection is not None and not self.done.done():
            self.connection.pause_reading()

    def resume_reading(self) -> None:
        if self.connection is not None and not self.done.done():
            self.connection.resume_reading()

    def _settle(self) -> None:
        if not self.done.done():
            self.done.set_result(None)


# A call's answer is read for its usage once it has ended, or whenever this much of it is held.
_READ_EVERY_BYTES = 256 * 1024


class _CallMeter:
    """One model call on its way: its usage reader and its clock.

    Nothing on the call's way to the CLI waits for reading. The request is read for its model
    after the call (a CLI's request carries the conversation and its tools: tens to hundreds of
    KB of JSON, a millisecond or more to parse); the answer's chunks are held, with when each
    came, and read for usage after the call too, or whenever `_READ_EVERY_BYTES` of them are
    held. The answer's own content type says how to read it (a stream of events or one JSON
    document), and the chunk in which content began gives the time to first token."""

    def __init__(
        self,
        api: WireApi,
        request: CliRequest,
        started: float,
        started_at: float,
        facts: RequestFacts | None,
    ) -> None:
        self.api = api
        self.started = started
        self.started_at = started_at
        self.first_content: float | None = None
        self._request = request
        self._facts = facts
        self._events = False
        self._decode: BodyDecoder | None = None
        self._reader: UsageReader | None = None
        self._held: list[tuple[float, bytes]] = []
        self._held_bytes = 0

    @property
    def facts(self) -> RequestFacts:
        if self._facts is None:
            self._facts = request_facts(self.api, self._request.body, path=self._request.path)
        return self._facts

    def answer_began(self, headers: list[tuple[bytes, bytes]]) -> None:
        self._decode = BodyDecoder(headers)
        self._events = any(
            name.lower() == b"content-type" and value.lower().startswith(b"text/event-stream")
            for name, value in headers
        )

    def feed(self, chunk: bytes) -> None:
        self._held.append((time.monotonic(), chunk))
        self._held_bytes += len(chunk)
        if self._held_bytes >= _READ_EVERY_BYTES:
            self._read_held()

    def _read_held(self) -> UsageReader:
        if self._reader is None:
            self._reader = UsageReader(self.api, self._events)
        reader = self._reader
        held = iter(self._held)
        # Chunk by chunk until content begins (which chunk it came in is the time to first
        # token), then the rest in one piece: one pass of the reader, not one per chunk.
        for came_at, chunk in held:
            reader.feed(self._decoded(chunk))
            if reader.content_started:
                self.first_content = self.first_content or came_at
                break
        rest = b"".join(chunk for _, chunk in held)
        if rest:
            reader.feed(self._decoded(rest))
        self._held.clear()
        self._held_bytes = 0
        return reader

    def _decoded(self, raw: bytes) -> bytes:
        return self._decode.feed(raw) if self._decode is not None else raw

    def finish(self, job: JobCalls, status: int, message: str | None) -> ModelCall:
        read = self._read_held().finish()
        ok = 200 <= status < 300
        outcome: CallOutcome = (
            "ok" if ok and read.complete else "http_error" if not ok else "incomplete"
        )
        return ModelCall(
            seq=job.next_seq(),
            api=self.api.value,
            model=read.model or self.facts.model,
            streamed=self.facts.streamed,
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
            self.facts.model,
            self.facts.streamed,
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


def _may_want_stream_usage(body: bytes) -> bool:
    """Whether a Chat Completions body may be a stream without the usage asked for (then it is
    parsed before it goes); one that asks already, as OpenCode's does, or that does not
    stream, goes unparsed."""
    if b'"stream"' not in body:
        return False
    return b'"include_usage":true' not in body and b'"include_usage": true' not in body


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
