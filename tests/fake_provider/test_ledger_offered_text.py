"""What the ledger keeps of the text a request offered the model: the system prompt (wherever the
API carries it) and each tool's description, clipped, so a test can tell what a CLI put there."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from fake_provider.ledger import SYSTEM_LIMIT, TOOL_DESCRIPTION_LIMIT
from fake_provider.testing import RunningProvider

SYSTEM = "You are a CLI. Skills: probe-skill: reads zebras."
TOOL_TEXT = "Run a skill by name: probe-skill."
SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}}}

# One request per API, in the shapes the CLIs send: the system text where each puts it (Claude
# Code also sends a system-role message, Codex developer messages), one described tool.
REQUESTS: dict[str, tuple[str, dict[str, str], dict[str, Any]]] = {
    "anthropic": (
        "/v1/messages",
        {"x-api-key": "k"},
        {
            "model": "m",
            "system": [{"type": "text", "text": "You are a CLI."}],
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "system", "content": "Skills: probe-skill: reads zebras."},
            ],
            "tools": [{"name": "Skill", "description": TOOL_TEXT, "input_schema": SCHEMA}],
        },
    ),
    "openai_responses": (
        "/v1/responses",
        {"authorization": "Bearer k"},
        {
            "model": "m",
            "instructions": "You are a CLI.",
            "input": [
                {
                    "type": "message",
                    "role": "developer",
                    "content": [
                        {"type": "input_text", "text": "Skills: probe-skill: reads zebras."}
                    ],
                },
                {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "hi"}],
                },
            ],
            "tools": [
                {
                    "type": "function",
                    "name": "skill",
                    "description": TOOL_TEXT,
                    "parameters": SCHEMA,
                }
            ],
        },
    ),
    "openai_chat": (
        "/v1/chat/completions",
        {"authorization": "Bearer k"},
        {
            "model": "m",
            "messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": "hi"},
            ],
            "tools": [
                {
                    "type": "function",
                    "function": {"name": "skill", "description": TOOL_TEXT, "parameters": SCHEMA},
                }
            ],
        },
    ),
    "gemini": (
        "/v1beta/models/m:generateContent",
        {"x-goog-api-key": "k"},
        {
            "systemInstruction": {"parts": [{"text": SYSTEM}]},
            "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
            "tools": [
                {
                    "functionDeclarations": [
                        {
                            "name": "activate_skill",
                            "description": TOOL_TEXT,
                            "parametersJsonSchema": SCHEMA,
                        }
                    ]
                }
            ],
        },
    ),
}


@pytest.mark.parametrize("api", sorted(REQUESTS))
def test_the_system_prompt_and_tool_descriptions_are_recorded(
    api: str, client: httpx.Client, provider: RunningProvider
) -> None:
    path, headers, body = REQUESTS[api]
    assert client.post(path, json=body, headers=headers).status_code == 200
    (entry,) = provider.ledger.model_calls()
    assert entry.api == api
    assert "reads zebras" in entry.system and "You are a CLI." in entry.system
    assert "hi" not in entry.system  # the conversation is not the system prompt
    assert entry.tool_descriptions == (TOOL_TEXT,)
    assert entry.offers("probe-skill: reads zebras") and entry.offers("Run a skill by name")
    assert not entry.offers("other-skill")
    recorded = client.get("/_fake/ledger").json()["entries"][0]
    assert recorded["tool_descriptions"] == [TOOL_TEXT] and recorded["system"] == entry.system


def test_a_refused_call_keeps_what_it_offered(
    client: httpx.Client, provider: RunningProvider
) -> None:
    path, _, body = REQUESTS["openai_chat"]
    assert client.post(path, json=body, headers={"authorization": "Bearer bad"}).status_code == 401
    (entry,) = provider.ledger.model_calls()
    assert entry.status == 401 and entry.offers("reads zebras")


def test_long_text_is_clipped(client: httpx.Client, provider: RunningProvider) -> None:
    path, headers, body = REQUESTS["openai_chat"]
    long_body = {
        **body,
        "messages": [{"role": "system", "content": "s" * (SYSTEM_LIMIT + 10)}, body["messages"][1]],
        "tools": [
            {
                "type": "function",
                "function": {"name": "t", "description": "d" * (TOOL_DESCRIPTION_LIMIT + 10)},
            },
            {"type": "function", "function": {"name": "u"}},
        ],
    }
    assert client.post(path, json=long_body, headers=headers).status_code == 200
    (entry,) = provider.ledger.model_calls()
    assert entry.system == "s" * SYSTEM_LIMIT
    assert entry.tool_descriptions == ("d" * TOOL_DESCRIPTION_LIMIT, "")


def test_context_blocks_in_user_messages_are_offered_text_the_prompt_is_not(
    client: httpx.Client, provider: RunningProvider
) -> None:
    # Claude Code, for some models, lists skills in a <system-reminder> of the first user message.
    reminder = "<system-reminder>\nSkills:\n- probe-skill: reads zebras.\n</system-reminder>"
    body = {
        "model": "m",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": reminder},
                    {"type": "text", "text": "tell me about okapis"},
                ],
            }
        ],
        "tools": [{"name": "Skill", "input_schema": SCHEMA}],
    }
    assert client.post("/v1/messages", json=body, headers={"x-api-key": "k"}).status_code == 200
    (entry,) = provider.ledger.model_calls()
    assert entry.injected_context == reminder
    assert entry.prompt == "tell me about okapis"
    assert entry.offers("probe-skill: reads zebras") and not entry.offers("okapis")
    assert entry.tool_descriptions == ("",)
    recorded = client.get("/_fake/ledger").json()["entries"][0]
    assert recorded["injected_context"] == reminder
