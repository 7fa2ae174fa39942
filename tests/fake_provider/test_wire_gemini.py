"""Gemini generateContent / streamGenerateContent on the wire, as Gemini CLI sends and reads it."""

from __future__ import annotations

import json
from typing import Any

import httpx

from fake_provider.gemini import Gemini
from fake_provider.testing import RunningProvider
from fake_provider.usage import AUX, Usage

HEADERS = {"x-goog-api-key": "test-key"}
STREAM = "/v1beta/models/gemini-fake:streamGenerateContent?alt=sse"
GENERATE = "/v1beta/models/gemini-fake:generateContent"
CONTEXT = "<session_context>\n- **Workspace Directories:**\n  - /ws\n</session_context>"
WRITE_FILE = {
    "name": "write_file",
    "parametersJsonSchema": {
        "type": "object",
        "properties": {"file_path": {"type": "string"}, "content": {"type": "string"}},
    },
}


def body(prompt: str, *, tools: bool = True, **extra: Any) -> dict[str, Any]:
    return {
        "systemInstruction": {"parts": [{"text": "You are Gemini CLI."}]},
        "contents": [{"role": "user", "parts": [{"text": CONTEXT}, {"text": prompt}]}],
        "tools": [{"functionDeclarations": [WRITE_FILE]}] if tools else [],
        **extra,
    }


def stream_chunks(client: httpx.Client, payload: dict[str, Any]) -> list[dict[str, Any]]:
    with client.stream("POST", STREAM, json=payload, headers=HEADERS) as reply:
        assert reply.status_code == 200
        raw = reply.read().decode()
    frames = [f for f in raw.split("\r\n\r\n") if f]
    assert raw.endswith("\r\n\r\n") and all(f.startswith("data: ") for f in frames)
    return [json.loads(f.removeprefix("data: ")) for f in frames]


def test_text_stream(client: httpx.Client) -> None:
    chunks = stream_chunks(client, body("say hello"))
    assert len(chunks) > 1
    text = "".join(p["text"] for c in chunks for p in c["candidates"][0]["content"]["parts"])
    assert text == "hello from fake model"
    assert all(c["candidates"][0]["content"]["role"] == "model" for c in chunks)
    assert "finishReason" not in chunks[0]["candidates"][0]
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    assert chunks[0]["usageMetadata"] == {"promptTokenCount": 100, "totalTokenCount": 100}
    usage = chunks[-1]["usageMetadata"]
    assert usage["promptTokenCount"] == 100 and usage["cachedContentTokenCount"] == 5
    assert usage["candidatesTokenCount"] == 9 and usage["thoughtsTokenCount"] == 3
    assert usage["totalTokenCount"] == 112
    assert Gemini().decode_usage(usage) == Usage(95, 5, 0, 12, 3)
    assert len({c["responseId"] for c in chunks}) == 1


def test_function_call(client: httpx.Client, provider: RunningProvider) -> None:
    chunks = stream_chunks(client, body("write hello.txt"))
    parts = [p for c in chunks for p in c["candidates"][0]["content"]["parts"]]
    assert parts == [
        {
            "functionCall": {
                "name": "write_file",
                "args": {"file_path": "/ws/hello.txt", "content": "hello from fake model\n"},
            }
        }
    ]
    (entry,) = provider.ledger.model_calls()
    assert entry.model == "gemini-fake" and entry.stream and entry.tools_offered == ("write_file",)


def test_function_response_leads_to_done(client: httpx.Client) -> None:
    payload = body("write hello.txt")
    payload["contents"] += [
        {"role": "model", "parts": [{"functionCall": {"name": "write_file", "args": {}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "write_file", "response": {}}}]},
    ]
    reply = client.post(GENERATE, json=payload, headers=HEADERS).json()
    assert reply["candidates"][0]["content"]["parts"] == [{"text": "done: wrote hello.txt"}]
    assert reply["candidates"][0]["finishReason"] == "STOP"


def test_router_call_gets_json_and_reports_aux_usage_uncounted(
    client: httpx.Client, provider: RunningProvider
) -> None:
    schema = {"type": "OBJECT", "properties": {"complexity_score": {"type": "INTEGER"}}}
    config = {"responseMimeType": "application/json", "responseJsonSchema": schema}
    payload = body("say hello", tools=False, generationConfig=config)
    reply = client.post(GENERATE, json=payload, params={"key": "test-key"}).json()
    text = reply["candidates"][0]["content"]["parts"][0]["text"]
    assert json.loads(text) == {"complexity_score": 1}
    usage = reply["usageMetadata"]
    assert usage["promptTokenCount"] == 20 and usage["cachedContentTokenCount"] == 0
    assert usage["candidatesTokenCount"] == 4 and usage["thoughtsTokenCount"] == 0
    assert usage["totalTokenCount"] == 24
    (entry,) = provider.ledger.model_calls()
    assert not entry.counted and entry.usage == AUX and not entry.stream


def test_bad_key_gets_googles_error(client: httpx.Client) -> None:
    reply = client.post(STREAM, json=body("hi"), headers={"x-goog-api-key": "bad"})
    assert reply.status_code == 401
    assert reply.json()["error"]["status"] == "UNAUTHENTICATED"
    assert reply.json()["error"]["code"] == 401


def test_side_endpoints(client: httpx.Client) -> None:
    count = client.post("/v1beta/models/gemini-fake:countTokens", json=body("hi"), headers=HEADERS)
    assert count.json() == {"totalTokens": 100}
    models = client.get("/v1beta/models", headers=HEADERS).json()["models"]
    assert models[0]["name"].startswith("models/")
    info = client.get("/v1beta/models/gemini-fake", headers=HEADERS).json()
    assert info["name"] == "models/gemini-fake"
    embed = client.post("/v1beta/models/e:embedContent", json={}, headers=HEADERS).json()
    assert len(embed["embedding"]["values"]) > 0
