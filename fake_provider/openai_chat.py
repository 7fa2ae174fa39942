"""OpenAI Chat Completions API (`POST /v1/chat/completions`), as OpenCode calls it.

Stream: unnamed `data:` chunks of `chat.completion.chunk` (role, content deltas, tool_calls deltas
whose `arguments` arrive in fragments, a chunk with finish_reason), then, only when
`stream_options.include_usage` is set, a chunk with empty `choices` and the usage; then
`data: [DONE]`. Usage: `prompt_tokens` is the whole prompt, with
`prompt_tokens_details.cached_tokens` part of it; `completion_tokens` includes
`completion_tokens_details.reasoning_tokens`. There is no cache-write field, so cache writes
count as uncached input.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request

from fake_provider.script import Failure, ModelRequest, Reply, ToolSpec
from fake_provider.sse import frame, json_pieces, pacer_for, text_pieces
from fake_provider.usage import ZERO, Usage
from fake_provider.wire import (
    Call,
    Message,
    bearer_token,
    build_request,
    description_of,
    new_id,
    openai_auth_failure,
    openai_error_body,
    texts_of,
)


class OpenAIChat:
    name = "openai_chat"
    media_type = "text/event-stream"

    def api_key(self, request: Request) -> str | None:
        return bearer_token(request)

    def parse(self, request: Request, body: dict[str, Any]) -> ModelRequest:
        system: list[str] = []
        messages: list[Message] = []
        for raw in body.get("messages") or []:
            role = str(raw.get("role"))
            texts = texts_of(raw.get("content"), "text")
            if role in ("system", "developer"):
                system.extend(texts)
            else:
                messages.append(Message(role=role, texts=texts, tool_result=role == "tool"))
        tools = [
            ToolSpec(str(fn.get("name", "")), fn.get("parameters") or {}, description_of(fn))
            for fn in (tool.get("function") or {} for tool in body.get("tools") or [])
        ]
        return build_request(
            api=self.name,
            model=str(body.get("model", "")),
            messages=messages,
            system=system,
            tools=tools,
            stream=bool(body.get("stream")),
            json_schema=_json_schema(body),
        )

    def auth_failure(self, api_key: str | None) -> Failure:
        return openai_auth_failure(api_key)

    def error_body(self, failure: Failure) -> dict[str, Any]:
        return openai_error_body(failure)

    def encode_usage(self, usage: Usage) -> dict[str, Any]:
        return {
            "prompt_tokens": usage.prompt,
            "completion_tokens": usage.output,
            "total_tokens": usage.prompt + usage.output,
            "prompt_tokens_details": {"cached_tokens": usage.cache_read},
            "completion_tokens_details": {"reasoning_tokens": usage.reasoning},
        }

    def decode_usage(self, fields: dict[str, Any]) -> Usage:
        cached = (fields.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
        return Usage(
            input=(fields.get("prompt_tokens") or 0) - cached,
            cache_read=cached,
            output=fields.get("completion_tokens") or 0,
            reasoning=(fields.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0,
        )

    def reported_usage(self, body: dict[str, Any], usage: Usage) -> Usage:
        """A stream carries usage only when the client asked for it."""
        if body.get("stream") and not (body.get("stream_options") or {}).get("include_usage"):
            return ZERO
        return self.decode_usage(self.encode_usage(usage))

    def response_body(self, reply: Reply, call: Call) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
        if reply.tool_call is not None:
            message["tool_calls"] = [_tool_call(reply)]
        return {
            **_head(call, "chat.completion"),
            "choices": [
                {"index": 0, "message": message, "finish_reason": _finish(reply), "logprobs": None}
            ],
            "usage": self.encode_usage(call.usage),
        }

    async def stream(self, reply: Reply, call: Call) -> AsyncIterator[bytes]:
        head = _head(call, "chat.completion.chunk")
        with_usage = bool((call.body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
            return frame({**head, "choices": [choice], **({"usage": None} if with_usage else {})})

        texts = text_pieces(reply.text) if reply.text else []
        call_json = json.dumps(reply.tool_call.arguments) if reply.tool_call else ""
        fragments = json_pieces(call_json) if reply.tool_call else []
        pacer = pacer_for(reply.duration, len(texts) + len(fragments))
        yield chunk({"role": "assistant", "content": ""})
        for piece in texts:
            await pacer.step()
            yield chunk({"content": piece})
        if reply.tool_call is not None:
            first = {**_tool_call(reply), "index": 0}
            first["function"] = {**first["function"], "arguments": ""}
            yield chunk({"tool_calls": [first]})
            for piece in fragments:
                await pacer.step()
                yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
        await pacer.finish()
        yield chunk({}, _finish(reply))
        if with_usage:
            yield frame({**head, "choices": [], "usage": self.encode_usage(call.usage)})
        yield frame("[DONE]")


def _head(call: Call, obj: str) -> dict[str, Any]:
    return {
        "id": new_id("chatcmpl-"),
        "object": obj,
        "created": int(time.time()),
        "model": call.model,
        "system_fingerprint": "fp_fake",
    }


def _tool_call(reply: Reply) -> dict[str, Any]:
    assert reply.tool_call is not None
    return {
        "id": new_id("call_"),
        "type": "function",
        "function": {
            "name": reply.tool_call.name,
            "arguments": json.dumps(reply.tool_call.arguments),
        },
    }


def _finish(reply: Reply) -> str:
    return "tool_calls" if reply.tool_call is not None else "stop"


def _json_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    response_format = body.get("response_format") or {}
    if response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        return schema if isinstance(schema, dict) else {}
    if response_format.get("type") == "json_object":
        return {}
    return None
