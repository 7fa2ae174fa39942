"""OpenAI Chat Completions on the wire, as OpenCode (AI SDK openai-compatible) sends and reads it."""

from __future__ import annotations

import json
from typing import Any

import httpx

from fake_provider.openai_chat import OpenAIChat
from fake_provider.testing import RunningProvider
from fake_provider.usage import AUX, ZERO, Usage

HEADERS = {"authorization": "Bearer test-key"}
WRITE = {
    "type": "function",
    "function": {
        "name": "write",
        "parameters": {"properties": {"filePath": {"type": "string"}, "content": {}}},
    },
}


def body(prompt: str, *, include_usage: bool = True, **extra: Any) -> dict[str, Any]:
    return {
        "model": "fake-model",
        "stream": True,
        "stream_options": {"include_usage": include_usage},
        "tools": [WRITE],
        "messages": [
            {"role": "system", "content": "You are opencode.\nWorking directory: /ws\n"},
            {"role": "user", "content": prompt},
        ],
        **extra,
    }


def chunks(client: httpx.Client, payload: dict[str, Any]) -> list[Any]:
    with client.stream("POST", "/v1/chat/completions", json=payload, headers=HEADERS) as reply:
        assert reply.status_code == 200
        lines = [line for line in reply.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    return [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]


def test_text_stream_with_usage_chunk(client: httpx.Client) -> None:
    data = chunks(client, body("say hello"))
    assert all(c["object"] == "chat.completion.chunk" for c in data)
    assert len({c["id"] for c in data}) == 1
    assert data[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in data if c["choices"])
    assert text == "hello from fake model"
    assert data[-2]["choices"][0]["finish_reason"] == "stop"
    assert all(c["usage"] is None for c in data[:-1])
    final = data[-1]
    assert final["choices"] == []
    assert final["usage"] == {
        "prompt_tokens": 100,
        "completion_tokens": 12,
        "total_tokens": 112,
        "prompt_tokens_details": {"cached_tokens": 5},
        "completion_tokens_details": {"reasoning_tokens": 3},
    }
    # No cache-write field in Chat Completions: the 7 cache-written tokens count as input.
    assert OpenAIChat().decode_usage(final["usage"]) == Usage(95, 5, 0, 12, 3)


def test_without_include_usage_no_usage_is_sent_or_ledgered(
    client: httpx.Client, provider: RunningProvider
) -> None:
    data = chunks(client, body("say hello", include_usage=False))
    assert all("usage" not in c for c in data)
    (entry,) = provider.ledger.model_calls()
    assert entry.usage == ZERO


def test_tool_call_deltas(client: httpx.Client) -> None:
    data = chunks(client, body("create notes.md with a greeting"))
    calls = [c["choices"][0]["delta"]["tool_calls"][0] for c in data if c["choices"]
             if "tool_calls" in c["choices"][0]["delta"]]  # fmt: skip
    assert calls[0]["index"] == 0 and calls[0]["id"].startswith("call_")
    assert calls[0]["function"] == {"name": "write", "arguments": ""}
    arguments = "".join(c["function"]["arguments"] for c in calls[1:])
    assert json.loads(arguments) == {
        "filePath": "/ws/notes.md",
        "content": "hello from fake model\n",
    }
    assert data[-2]["choices"][0]["finish_reason"] == "tool_calls"


def test_tool_message_leads_to_done_non_streaming(client: httpx.Client) -> None:
    payload = body("create notes.md", stream=False)
    payload["messages"] += [
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function"}]},
        {"role": "tool", "tool_call_id": "c1", "content": "Wrote file successfully."},
    ]
    reply = client.post("/v1/chat/completions", json=payload, headers=HEADERS).json()
    assert reply["object"] == "chat.completion"
    assert reply["choices"][0]["message"] == {
        "role": "assistant",
        "content": "done: wrote notes.md",
    }
    assert reply["usage"]["prompt_tokens"] == 100


def test_title_call_without_tools_reports_aux_usage_uncounted(
    client: httpx.Client, provider: RunningProvider
) -> None:
    payload = body("write hello.txt", tools=[])
    data = chunks(client, payload)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in data if c["choices"])
    assert text == "hello from fake model"
    assert data[-1]["usage"] == {
        "prompt_tokens": 20,
        "completion_tokens": 4,
        "total_tokens": 24,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }
    (entry,) = provider.ledger.model_calls()
    assert not entry.counted and entry.usage == AUX


def test_bad_key(client: httpx.Client) -> None:
    reply = client.post(
        "/v1/chat/completions", json=body("hi"), headers={"authorization": "Bearer bad-key"}
    )
    assert reply.status_code == 401
    assert reply.json()["error"]["code"] == "invalid_api_key"
