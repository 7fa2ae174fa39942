"""Anthropic Messages on the wire, as Claude Code sends and reads it."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from fake_provider.anthropic import AnthropicMessages
from fake_provider.testing import RunningProvider
from fake_provider.usage import AUX, FIXED, Usage
from tests.support.sse import iter_sse

HEADERS = {"x-api-key": "test-key", "anthropic-version": "2023-06-01"}
WRITE = {
    "name": "Write",
    "input_schema": {
        "type": "object",
        "properties": {"file_path": {"type": "string"}, "content": {"type": "string"}},
    },
}
SYSTEM = [{"type": "text", "text": "You are Claude Code.\n - Primary working directory: /ws\n"}]
REMINDER = {"type": "text", "text": "<system-reminder>\nwrite other.txt\n</system-reminder>"}


def body(prompt: str, *, stream: bool = True, tools: bool = True, **extra: Any) -> dict[str, Any]:
    return {
        "model": "claude-opus-4-8",
        "max_tokens": 1000,
        "stream": stream,
        "system": SYSTEM,
        "tools": [WRITE] if tools else [],
        "messages": [{"role": "user", "content": [REMINDER, {"type": "text", "text": prompt}]}],
        **extra,
    }


def stream_events(client: httpx.Client, payload: dict[str, Any]) -> list[tuple[str, Any]]:
    with client.stream("POST", "/v1/messages?beta=true", json=payload, headers=HEADERS) as reply:
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/event-stream")
        return [(event.event, event.json) for event in iter_sse(reply)]


def test_text_stream_has_the_real_event_sequence(client: httpx.Client) -> None:
    events = stream_events(client, body("say hello"))
    kinds = [kind for kind, _ in events]
    assert kinds[:3] == ["message_start", "ping", "content_block_start"]
    assert kinds[-4:] == [
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(kind == data["type"] for kind, data in events)
    text = "".join(d["delta"]["text"] for k, d in events if k == "content_block_delta")
    assert text == "hello from fake model"
    start = events[0][1]["message"]
    assert start["role"] == "assistant" and start["model"] == "claude-opus-4-8"
    delta = events[-2][1]
    assert delta["delta"]["stop_reason"] == "end_turn"
    assert AnthropicMessages().decode_usage(delta["usage"]) == Usage(
        input=88, cache_read=5, cache_write=7, output=12
    )


def test_tool_use_streams_input_json_deltas(client: httpx.Client) -> None:
    events = stream_events(client, body("write hello.txt"))
    start = next(d for k, d in events if k == "content_block_start")
    assert start["content_block"]["type"] == "tool_use"
    assert start["content_block"]["name"] == "Write"
    assert start["content_block"]["id"].startswith("toolu_")
    deltas = [d["delta"] for k, d in events if k == "content_block_delta"]
    assert len(deltas) > 1 and all(d["type"] == "input_json_delta" for d in deltas)
    arguments = json.loads("".join(d["partial_json"] for d in deltas))
    assert arguments == {"file_path": "/ws/hello.txt", "content": "hello from fake model\n"}
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_after_the_tool_result_it_says_done(client: httpx.Client) -> None:
    payload = body("write hello.txt", stream=False)
    payload["messages"] += [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Write"}]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}],
        },
    ]
    reply = client.post("/v1/messages", json=payload, headers=HEADERS).json()
    assert reply["content"] == [{"type": "text", "text": "done: wrote hello.txt"}]
    assert reply["stop_reason"] == "end_turn"


def test_non_streaming_message(client: httpx.Client, provider: RunningProvider) -> None:
    reply = client.post("/v1/messages", json=body("say hello", stream=False), headers=HEADERS)
    data = reply.json()
    assert data["type"] == "message" and data["id"].startswith("msg_")
    assert data["content"] == [{"type": "text", "text": "hello from fake model"}]
    assert data["usage"] == {
        "input_tokens": 88,
        "cache_creation_input_tokens": 7,
        "cache_read_input_tokens": 5,
        "output_tokens": 12,
    }
    (entry,) = provider.ledger.model_calls()
    assert entry.api == "anthropic" and entry.counted and entry.finished
    # Anthropic has no reasoning count: the 3 reasoning tokens stay inside output.
    assert entry.usage == Usage(input=88, cache_read=5, cache_write=7, output=12, reasoning=0)
    assert entry.usage.prompt == FIXED.prompt


def test_a_call_without_tools_is_auxiliary_and_reports_aux_usage(
    client: httpx.Client, provider: RunningProvider
) -> None:
    data = client.post("/v1/messages", json=body("hi", stream=False, tools=False), headers=HEADERS)
    assert data.json()["usage"] == {
        "input_tokens": 20,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": 4,
    }
    (entry,) = provider.ledger.model_calls()
    assert not entry.counted and entry.usage == AUX


def test_bad_key_gets_anthropics_401(client: httpx.Client, provider: RunningProvider) -> None:
    reply = client.post("/v1/messages", json=body("hi"), headers={"x-api-key": "a-bad-key"})
    assert reply.status_code == 401
    error = reply.json()
    assert error["type"] == "error"
    assert error["error"] == {"type": "authentication_error", "message": "invalid x-api-key"}
    (entry,) = provider.ledger.model_calls()
    assert entry.status == 401 and not entry.counted and entry.answer["kind"] == "error"


def test_structured_output_gets_json(client: httpx.Client) -> None:
    schema = {"type": "object", "properties": {"title": {"type": "string"}}}
    payload = body("hi", stream=False, output_format={"type": "json_schema", "schema": schema})
    reply = client.post("/v1/messages", json=payload, headers=HEADERS).json()
    assert json.loads(reply["content"][0]["text"]) == {"title": "hello from fake model"}


def test_count_tokens_and_base_url_probe(client: httpx.Client) -> None:
    counted = client.post("/v1/messages/count_tokens?beta=true", json=body("hi"), headers=HEADERS)
    assert counted.json() == {"input_tokens": 100}
    assert client.head("/").status_code == 200


@pytest.mark.parametrize("key", ["deadline-1bad2c3f", "bad0cafe", "run-abadcafe", "badger"])
def test_a_random_key_holding_bad_in_its_hex_is_accepted(client: httpx.Client, key: str) -> None:
    # Tests name keys f"<test>-{uuid4().hex[:8]}", and hex holds "bad" in about 1 of 700; a key is
    # refused only where "bad" stands as a word ("bad-key", "a-bad-key").
    reply = client.post("/v1/messages", json=body("hi"), headers={"x-api-key": key})
    assert reply.status_code == 200, reply.text
    models = client.get("/v1/models", headers={"x-api-key": key, "anthropic-version": "2023-06-01"})
    assert models.status_code == 200, models.text


@pytest.mark.parametrize("key", ["bad", "bad-key", "a-bad-key", "sk-bad-0123456789abcdef"])
def test_a_key_with_bad_as_a_word_is_refused_everywhere(client: httpx.Client, key: str) -> None:
    assert (
        client.post("/v1/messages", json=body("hi"), headers={"x-api-key": key}).status_code == 401
    )
    models = client.get("/v1/models", headers={"x-api-key": key, "anthropic-version": "2023-06-01"})
    assert models.status_code == 401
