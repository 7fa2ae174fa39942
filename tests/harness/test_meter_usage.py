"""The meter reads each wire API's usage exactly as the fake provider's ledger records it.

Real answers come from a fake provider on a loopback port; their raw bytes are fed to the reader
in seeded random chunk sizes (and one byte at a time), so events, JSON and UTF-8 characters are
cut everywhere.
"""

from __future__ import annotations

import json
import random
import tracemalloc
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from eventing.agent_events import Usage
from fake_provider.script import ModelRequest, Reply, ToolCall
from fake_provider.testing import RunningProvider, serve_in_thread
from fake_provider.usage import Usage as FakeUsage
from harness.meter.sse import SseFramer
from harness.meter.usage import CallUsage, UsageReader
from harness.meter.wire import RequestFacts, WireApi, request_facts, wire_api

SERVED = FakeUsage(input=880, cache_read=50, cache_write=70, output=120, reasoning=30)
TEXT = "héllo wörld ✓ 日本語 " * 40  # multi-byte characters, cut by 1-byte chunks
MODEL = "model-x"
KEY = "test-key"


class FixedAnswer:
    def __init__(self, *, tool: bool) -> None:
        self.tool = tool

    def reply(self, request: ModelRequest) -> Reply:
        if self.tool:
            call = ToolCall("write_file", {"file_path": "a.txt", "content": TEXT})
            return Reply(tool_call=call, usage=SERVED)
        return Reply(text=TEXT, usage=SERVED)


@dataclass(frozen=True)
class Call:
    path: str
    body: dict[str, Any]
    headers: dict[str, str]


def call_for(api: WireApi, streamed: bool, *, include_usage: bool = True) -> Call:
    bearer = {"authorization": f"Bearer {KEY}"}
    if api is WireApi.ANTHROPIC:
        messages = [{"role": "user", "content": "hi"}]
        body = {"model": MODEL, "max_tokens": 50, "messages": messages, "stream": streamed}
        return Call("/v1/messages?beta=true", body, {"x-api-key": KEY})
    if api is WireApi.OPENAI_RESPONSES:
        return Call("/v1/responses", {"model": MODEL, "input": "hi", "stream": streamed}, bearer)
    if api is WireApi.OPENAI_CHAT:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
        if streamed:
            body |= {"stream": True, "stream_options": {"include_usage": include_usage}}
        return Call("/v1/chat/completions", body, bearer)
    method = "streamGenerateContent?alt=sse" if streamed else "generateContent"
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    return Call(f"/v1beta/models/{MODEL}:{method}", body, {"x-goog-api-key": KEY})


def answer(provider: RunningProvider, call: Call) -> bytes:
    response = httpx.post(
        provider.base_url + call.path, content=json.dumps(call.body), headers=call.headers
    )
    assert response.status_code == 200, response.text
    return response.content


def ledger_usage(provider: RunningProvider) -> Usage:
    entry = provider.ledger.model_calls()[-1]
    assert entry.finished
    return Usage(**entry.usage.as_dict())


def random_chunks(data: bytes, seed: int, largest: int = 64) -> Iterator[bytes]:
    rng = random.Random(seed)
    start = 0
    while start < len(data):
        size = rng.randint(1, largest)
        yield data[start : start + size]
        start += size


def read(api: WireApi, streamed: bool, chunks: Iterable[bytes]) -> CallUsage:
    reader = UsageReader(api, streamed)
    for chunk in chunks:
        reader.feed(chunk)
    return reader.finish()


ALL_APIS = list(WireApi)


@pytest.fixture(scope="module", params=[False, True], ids=["text", "tool_call"])
def provider(request: pytest.FixtureRequest) -> Iterator[RunningProvider]:
    with serve_in_thread(FixedAnswer(tool=request.param)) as running:
        yield running


@pytest.mark.parametrize("streamed", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("api", ALL_APIS)
def test_usage_equals_the_ledger_whatever_the_chunking(
    provider: RunningProvider, api: WireApi, streamed: bool
) -> None:
    call = call_for(api, streamed)
    assert wire_api("POST", call.path) is api
    assert request_facts(api, json.dumps(call.body).encode(), path=call.path) == RequestFacts(
        model=MODEL, streamed=streamed
    )
    raw = answer(provider, call)
    expected = ledger_usage(provider)
    assert expected != Usage()

    whole = read(api, streamed, [raw])
    assert whole.complete
    assert whole.usage == expected
    assert whole.model == MODEL
    assert whole.bytes_read == len(raw)
    if streamed:
        assert whole.first_content_at == len(raw)  # one chunk: content seen with it
    else:
        assert whole.first_content_at is None

    one_byte = read(api, streamed, (raw[i : i + 1] for i in range(len(raw))))
    assert one_byte.usage == expected
    assert one_byte.complete and one_byte.model == MODEL
    for seed in range(5):
        cut = read(api, streamed, random_chunks(raw, seed))
        assert (cut.usage, cut.model, cut.complete) == (expected, MODEL, True), seed


def test_first_content_is_marked_at_the_chunk_that_completes_it(provider: RunningProvider) -> None:
    raw = answer(provider, call_for(WireApi.ANTHROPIC, True))
    reader = UsageReader(WireApi.ANTHROPIC, True)
    head, _, _ = raw.partition(b"event: content_block_delta")
    reader.feed(head)
    assert not reader.content_started
    reader.feed(raw[len(head) :])
    assert reader.content_started
    assert reader.finish().first_content_at == len(raw)


def test_a_chat_stream_without_usage_is_incomplete_as_the_ledger_says() -> None:
    with serve_in_thread(FixedAnswer(tool=False)) as provider:
        raw = answer(provider, call_for(WireApi.OPENAI_CHAT, True, include_usage=False))
        assert ledger_usage(provider) == Usage()
    result = read(WireApi.OPENAI_CHAT, True, random_chunks(raw, 1))
    assert (result.usage, result.complete, result.model) == (Usage(), False, MODEL)
    assert result.first_content_at is not None


@pytest.mark.parametrize("api", ALL_APIS)
def test_a_stream_cut_before_its_final_usage_is_incomplete(
    provider: RunningProvider, api: WireApi
) -> None:
    raw = answer(provider, call_for(api, True))
    for end in range(0, len(raw) - 2, max(1, len(raw) // 97)):
        result = read(api, True, random_chunks(raw[:end], end))
        if result.complete:
            # Only a cut after the final usage event is complete, and then it is exact.
            assert result.usage == ledger_usage(provider)
            assert end > len(raw) // 2
    # Cut inside the last JSON document that carries the usage: never complete.
    last_usage = max(raw.rfind(b'"usage'), raw.rfind(b"usageMetadata"))
    assert not read(api, True, [raw[: last_usage + 10]]).complete


@pytest.mark.parametrize("api", ALL_APIS)
def test_a_plain_answer_cut_short_is_incomplete_with_zero_usage(
    provider: RunningProvider, api: WireApi
) -> None:
    raw = answer(provider, call_for(api, False))
    result = read(api, False, [raw[: len(raw) - 1]])
    assert (result.usage, result.complete) == (Usage(), False)


GARBAGE = [
    b"",
    b"\x00\xff\xfe garbage \x80\x81",
    b"not json at all",
    b"[1, 2, 3]",
    b'"a string"',
    b"data: {\n\n",
    b"data: [1,2]\n\ndata: null\n\ndata: 42\n\n",
    b'{"usage": "lots", "model": 7, "usageMetadata": [1]}',
    b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}',
    b'{"error": {"code": 401, "message": "bad key", "status": "UNAUTHENTICATED"}}',
    b"[" * 100_000 + b"]" * 100_000,
    b'data: {"type":"message_delta","usage":{"output_tokens":"many"}}\n\n'[:-1],
    bytes(random.Random(7).randrange(256) for _ in range(20_000)),
]


@pytest.mark.parametrize("streamed", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("api", ALL_APIS)
@pytest.mark.parametrize("garbage", GARBAGE, ids=range(len(GARBAGE)))
def test_garbage_never_raises_and_reads_nothing(
    api: WireApi, streamed: bool, garbage: bytes
) -> None:
    for chunks in ([garbage], random_chunks(garbage, 3, largest=7)):
        result = read(api, streamed, chunks)
        assert (result.usage, result.complete) == (Usage(), False)


def test_malformed_counts_are_read_as_zero_not_trusted() -> None:
    stream = (
        b'event: message_start\ndata: {"type":"message_start","message":{"model":"m",'
        b'"usage":{"input_tokens":-5,"cache_read_input_tokens":true,"output_tokens":1.5}}}\n\n'
        b'event: message_delta\ndata: {"type":"message_delta","usage":{"output_tokens":7}}\n\n'
    )
    result = read(WireApi.ANTHROPIC, True, [stream])
    assert result.complete
    assert result.usage == Usage(output=7)


def test_the_sse_framer_accepts_every_line_ending() -> None:
    usage = {"prompt_tokens": 10, "completion_tokens": 2}
    event = json.dumps({"model": "m", "choices": [], "usage": usage}).encode()
    for ending in (b"\n", b"\r\n", b"\r"):
        stream = b": comment" + ending + b"data:" + event + ending + ending
        for seed in range(3):
            result = read(WireApi.OPENAI_CHAT, True, random_chunks(stream, seed, largest=3))
            assert result.complete and result.usage == Usage(input=10, output=2)


def test_a_plain_answer_over_the_cap_is_incomplete() -> None:
    body = json.dumps({"model": "m", "usage": {"input_tokens": 1}, "pad": "x" * 9_000_000})
    result = read(WireApi.ANTHROPIC, False, random_chunks(body.encode(), 1, largest=1 << 20))
    assert (result.usage, result.complete, result.bytes_read) == (Usage(), False, len(body))


def test_an_oversized_event_is_dropped_and_the_stream_read_on() -> None:
    huge = json.dumps({"type": "content_block_delta", "delta": {"text": "x" * 9_000_000}})
    final = {"type": "message_delta", "usage": {"input_tokens": 3, "output_tokens": 4}}
    stream = b"data: " + huge.encode() + b"\n\ndata: " + json.dumps(final).encode() + b"\n\n"
    result = read(WireApi.ANTHROPIC, True, random_chunks(stream, 2, largest=1 << 20))
    assert result.complete and result.usage == Usage(input=3, output=4)
    assert result.first_content_at is None  # the dropped event was never read


def huge_stream(api: WireApi, total: int) -> Iterator[bytes]:
    """A streamed answer of `total` bytes of text in 64 KiB deltas, built lazily."""
    piece = ("ab ✓ " * 10_000)[:16_000]  # 64,000 bytes of UTF-8
    count = total // len(piece.encode())
    if api is WireApi.ANTHROPIC:
        start = {"type": "message_start", "message": {"model": "big", "usage": {"input_tokens": 9}}}
        yield b"event: message_start\ndata: " + json.dumps(start).encode() + b"\n\n"
        delta = {"type": "content_block_delta", "index": 0, "delta": {"text": piece}}
        frame = b"event: content_block_delta\ndata: " + json.dumps(delta).encode() + b"\n\n"
        for _ in range(count):
            yield frame
        end = {"type": "message_delta", "usage": {"output_tokens": 5}}
        yield b"event: message_delta\ndata: " + json.dumps(end).encode() + b"\n\n"
        return
    chunk: dict[str, Any] = {
        "candidates": [{"content": {"parts": [{"text": piece}], "role": "model"}}],
        "usageMetadata": {"promptTokenCount": 9},
        "modelVersion": "big",
    }
    frame = b"data: " + json.dumps(chunk).encode() + b"\r\n\r\n"
    for _ in range(count):
        yield frame
    chunk["candidates"][0]["finishReason"] = "STOP"
    chunk["usageMetadata"] = {"promptTokenCount": 9, "candidatesTokenCount": 5}
    yield b"data: " + json.dumps(chunk).encode() + b"\r\n\r\n"


@pytest.mark.parametrize("api", [WireApi.ANTHROPIC, WireApi.GEMINI])
def test_a_50_mib_stream_is_read_in_constant_memory(api: WireApi) -> None:
    total = 50 * 1024 * 1024
    rng = random.Random(5)
    reader = UsageReader(api, True)
    tracemalloc.start()
    try:
        for frame in huge_stream(api, total):
            start = 0
            while start < len(frame):
                size = rng.randint(1, 40_000)
                reader.feed(frame[start : start + size])
                start += size
        result = reader.finish()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.bytes_read > total
    assert result.complete and result.usage == Usage(input=9, output=5) and result.model == "big"
    assert peak < 2 * 1024 * 1024, peak


@pytest.mark.parametrize(
    ("method", "path", "api"),
    [
        ("POST", "/v1/messages", WireApi.ANTHROPIC),
        ("post", "/v1/messages?beta=true", WireApi.ANTHROPIC),
        ("POST", "/v1/responses", WireApi.OPENAI_RESPONSES),
        ("POST", "/v1/chat/completions", WireApi.OPENAI_CHAT),
        ("POST", "/v1beta/models/gemini-2.5-pro:generateContent", WireApi.GEMINI),
        ("POST", "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse", WireApi.GEMINI),
        ("POST", "/v1/models/gemini-2.5-flash:generateContent?key=k", WireApi.GEMINI),
        ("GET", "/v1/messages", None),
        ("POST", "/v1/messages/count_tokens", None),
        ("GET", "/v1/models", None),
        ("POST", "/v1beta/models/gemini-2.5-pro:countTokens", None),
        ("POST", "/v1beta/models/a/b:generateContent", None),
        ("POST", "/v1/messagesX", None),
        ("POST", "", None),
    ],
)
def test_wire_api_by_path(method: str, path: str, api: WireApi | None) -> None:
    assert wire_api(method, path) is api


def test_request_facts_of_odd_bodies() -> None:
    nothing = RequestFacts(model=None, streamed=False)
    for body in (b"", b"\xff", b"[]", b'{"model": 3, "stream": "yes"}', b"{" * 50_000):
        assert request_facts(WireApi.OPENAI_CHAT, body) == nothing
    assert request_facts(WireApi.GEMINI, b"{}", path="/v1/other") == nothing
    assert request_facts(WireApi.ANTHROPIC, b'{"model":"m","stream":true}') == RequestFacts(
        model="m", streamed=True
    )


def test_events_skipped_after_content_never_hide_the_usage_or_the_end() -> None:
    """Content deltas after the first are not parsed; an event with usage or an end always is:
    here Gemini's counts come in a chunk of their own and its end in a later one without any."""
    text = {"candidates": [{"content": {"parts": [{"text": "usage-free text"}]}}]}
    chunks = [
        {**text, "modelVersion": "g-1"},
        text,
        {"usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 6}},
        text,
        {"candidates": [{"content": {"parts": [{"text": "."}]}, "finishReason": "STOP"}]},
    ]
    stream = b"".join(b"data: " + json.dumps(c).encode() + b"\r\n\r\n" for c in chunks)
    result = read(WireApi.GEMINI, True, random_chunks(stream, 3))
    assert result.complete and result.usage == Usage(input=4, output=6) and result.model == "g-1"


def reference_events(stream: bytes) -> list[bytes]:
    """The SSE spec's framing, line by line over the whole stream: the framer's oracle."""
    events: list[bytes] = []
    data: list[bytes] | None = None
    for line in stream.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n"):
        if not line:
            if data is not None:
                events.append(b"\n".join(data))
            data = None
            continue
        name, _, value = line.partition(b":")
        if name == b"data":
            data = (data or []) + [value[1:] if value.startswith(b" ") else value]
    return events


@pytest.mark.parametrize("seed", range(12))
def test_the_sse_framer_agrees_with_the_spec_however_the_stream_is_cut(seed: int) -> None:
    rng = random.Random(seed)
    lines: list[bytes] = []
    for n in range(rng.randint(1, 40)):
        for _ in range(rng.randint(0, 3)):
            lines.append(
                rng.choice(
                    [
                        b"data: " + json.dumps({"n": n, "text": "é✓" * rng.randint(0, 5)}).encode(),
                        b"data:" + str(n).encode(),
                        b"data",
                        b"event: delta",
                        b": keep-alive",
                        b"id: " + str(n).encode(),
                        b"datum: not data",
                    ]
                )
            )
        lines.append(b"")
    stream = b"".join(line + rng.choice([b"\n", b"\r\n", b"\r"]) for line in lines)
    framer = SseFramer()
    got = [
        event for chunk in random_chunks(stream, seed, largest=9) for event in framer.feed(chunk)
    ]
    assert got == reference_events(stream)
