"""OpenAI Responses on the wire, as Codex CLI sends and reads it."""

from __future__ import annotations

import json
from typing import Any

import httpx

from fake_provider.openai_responses import OpenAIResponses
from fake_provider.testing import RunningProvider
from fake_provider.usage import AUX, Usage
from tests.support.sse import iter_sse

HEADERS = {"authorization": "Bearer test-key"}
EXEC_COMMAND = {
    "type": "function",
    "name": "exec_command",
    "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}},
}
ENVIRONMENT = "<environment_context>\n  <cwd>/ws</cwd>\n</environment_context>"


def user(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def body(
    prompt: str, *, stream: bool = True, extra_input: list[Any] | None = None
) -> dict[str, Any]:
    return {
        "model": "gpt-fake",
        "stream": stream,
        "instructions": "You are Codex.",
        "tools": [EXEC_COMMAND, {"type": "web_search"}],
        "input": [user(ENVIRONMENT), user(prompt), *(extra_input or [])],
    }


def stream_events(client: httpx.Client, payload: dict[str, Any]) -> list[dict[str, Any]]:
    with client.stream("POST", "/v1/responses", json=payload, headers=HEADERS) as reply:
        assert reply.status_code == 200
        events = list(iter_sse(reply))
    assert all(event.event == event.json["type"] for event in events)
    return [event.json for event in events]


def test_text_stream(client: httpx.Client) -> None:
    events = stream_events(client, body("say hello"))
    kinds = [e["type"] for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text == "hello from fake model"
    completed = events[-1]["response"]
    assert completed["status"] == "completed" and completed["id"] == events[0]["response"]["id"]
    assert completed["output"][0]["content"][0]["text"] == text
    assert completed["usage"] == {
        "input_tokens": 100,
        "input_tokens_details": {"cached_tokens": 5, "cache_write_tokens": 7},
        "output_tokens": 12,
        "output_tokens_details": {"reasoning_tokens": 3},
        "total_tokens": 112,
    }
    assert OpenAIResponses().decode_usage(completed["usage"]) == Usage(88, 5, 7, 12, 3)


def test_function_call_stream(client: httpx.Client, provider: RunningProvider) -> None:
    events = stream_events(client, body("write hello.txt"))
    added = next(e for e in events if e["type"] == "response.output_item.added")["item"]
    assert added["type"] == "function_call" and added["name"] == "exec_command"
    assert added["arguments"] == ""
    deltas = [e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta"]
    done = next(e for e in events if e["type"] == "response.output_item.done")["item"]
    assert "".join(deltas) == done["arguments"]
    assert json.loads(done["arguments"]) == {
        "cmd": "printf %s 'hello from fake model\n' > hello.txt"
    }
    assert done["call_id"].startswith("call_")
    (entry,) = provider.ledger.model_calls()
    assert entry.answer["kind"] == "tool_call" and entry.usage == Usage(88, 5, 7, 12, 3)


def test_function_call_output_leads_to_done(client: httpx.Client) -> None:
    history = [
        {"type": "function_call", "name": "exec_command", "call_id": "c1", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "exit 0"},
    ]
    reply = client.post(
        "/v1/responses",
        json=body("write hello.txt", stream=False, extra_input=history),
        headers=HEADERS,
    ).json()
    assert reply["object"] == "response" and reply["status"] == "completed"
    assert reply["output"][0]["content"][0]["text"] == "done: wrote hello.txt"


def test_a_call_without_tools_reports_aux_usage_uncounted(
    client: httpx.Client, provider: RunningProvider
) -> None:
    payload = {**body("write a title", stream=False), "tools": []}
    reply = client.post("/v1/responses", json=payload, headers=HEADERS).json()
    assert reply["output"][0]["content"][0]["text"] == "hello from fake model"
    assert reply["usage"] == {
        "input_tokens": 20,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": 4,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 24,
    }
    (entry,) = provider.ledger.model_calls()
    assert not entry.counted and entry.usage == AUX


def test_bad_key_gets_openais_401_without_the_key(client: httpx.Client) -> None:
    key = "sk-bad-0123456789abcdef"
    reply = client.post(
        "/v1/responses", json=body("hi"), headers={"authorization": f"Bearer {key}"}
    )
    assert reply.status_code == 401
    error = reply.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_api_key"
    assert error["message"].startswith("Incorrect API key provided: sk-")
    assert key not in reply.text


def test_missing_key_is_401_too(client: httpx.Client) -> None:
    assert client.post("/v1/responses", json=body("hi")).status_code == 401
