"""A minimal model call in each wire API, as a CLI's client sends it, offering one tool (so the
fake provider answers it as an agent's turn): for tests and benchmarks that play the CLI.

    path, body = sample_call("anthropic", "say hi", stream=True)
    httpx.post(base_url + path, json=body, headers=key_headers("anthropic", key))
"""

from __future__ import annotations

from typing import Any

API_NAMES = ("anthropic", "openai_responses", "openai_chat", "gemini")
_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}


def sample_call(
    api: str, prompt: str = "say hi", *, stream: bool, ask_usage: bool = False
) -> tuple[str, dict[str, Any]]:
    """The path and JSON body of a call. `ask_usage`: a streamed Chat call asks for its usage
    chunk itself (``stream_options.include_usage``), as OpenCode's client does."""
    if api == "anthropic":
        tool = {"name": "t", "description": "a tool", "input_schema": _SCHEMA}
        return "/v1/messages", {
            "model": "claude-sample",
            "max_tokens": 100,
            "messages": [{"role": "user", "content": prompt}],
            "tools": [tool],
            "stream": stream,
        }
    if api == "openai_responses":
        tool = {"type": "function", "name": "t", "description": "a tool", "parameters": _SCHEMA}
        return "/v1/responses", {
            "model": "gpt-sample",
            "input": prompt,
            "tools": [tool],
            "stream": stream,
        }
    if api == "openai_chat":
        body: dict[str, Any] = {
            "model": "chat-sample",
            "messages": [{"role": "user", "content": prompt}],
            "tools": [{"type": "function", "function": {"name": "t", "parameters": _SCHEMA}}],
            "stream": stream,
        }
        if stream and ask_usage:
            body["stream_options"] = {"include_usage": True}
        return "/v1/chat/completions", body
    if api == "gemini":
        method = "streamGenerateContent?alt=sse" if stream else "generateContent"
        return f"/v1beta/models/gemini-sample:{method}", {
            "contents": [{"role": "user", "parts": [{"text": prompt}]}],
            "tools": [{"functionDeclarations": [{"name": "t", "parameters": _SCHEMA}]}],
        }
    raise ValueError(f"{api!r} is not one of {', '.join(API_NAMES)}")


def key_headers(api: str, key: str) -> dict[str, str]:
    """Where each API's client sends its key."""
    if api == "anthropic":
        return {"x-api-key": key, "anthropic-version": "2023-06-01"}
    if api == "gemini":
        return {"x-goog-api-key": key}
    return {"authorization": f"Bearer {key}"}
