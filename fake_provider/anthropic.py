"""Anthropic Messages API (`POST /v1/messages`), as Claude Code calls it.

Stream: message_start, ping, per block content_block_start / content_block_delta (text_delta or
input_json_delta) / content_block_stop, message_delta (stop_reason, usage), message_stop.
Usage: `input_tokens` excludes the cache; cache reads and writes have their own fields.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request

from fake_provider.script import Failure, ModelRequest, Reply, ToolSpec
from fake_provider.sse import frame, json_pieces, pacer_for, text_pieces
from fake_provider.usage import Usage
from fake_provider.wire import (
    Call,
    Message,
    bearer_token,
    build_request,
    description_of,
    new_id,
    texts_of,
)

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


class AnthropicMessages:
    name = "anthropic"
    media_type = "text/event-stream; charset=utf-8"

    def api_key(self, request: Request) -> str | None:
        return request.headers.get("x-api-key") or bearer_token(request)

    def parse(self, request: Request, body: dict[str, Any]) -> ModelRequest:
        system = texts_of(body.get("system"), "text")
        messages: list[Message] = []
        for raw in body.get("messages") or []:
            content = raw.get("content")
            if raw.get("role") == "system":
                system.extend(texts_of(content, "text"))
                continue
            blocks = content if isinstance(content, list) else []
            messages.append(
                Message(
                    role=str(raw.get("role")),
                    texts=texts_of(content, "text"),
                    tool_result=any(
                        b.get("type") == "tool_result" for b in blocks if isinstance(b, dict)
                    ),
                )
            )
        tools = [
            ToolSpec(
                str(tool.get("name", "")),
                tool.get("input_schema") or {},
                description_of(tool),
            )
            for tool in body.get("tools") or []
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
        return Failure(401, "invalid x-api-key")

    def error_body(self, failure: Failure) -> dict[str, Any]:
        kind = ERROR_TYPES.get(failure.status, "api_error")
        return {
            "type": "error",
            "error": {"type": kind, "message": failure.message},
            "request_id": new_id("req_"),
        }

    def encode_usage(self, usage: Usage) -> dict[str, Any]:
        return {
            "input_tokens": usage.input,
            "cache_creation_input_tokens": usage.cache_write,
            "cache_read_input_tokens": usage.cache_read,
            "output_tokens": usage.output,
        }

    def decode_usage(self, fields: dict[str, Any]) -> Usage:
        return Usage(
            input=fields.get("input_tokens") or 0,
            cache_read=fields.get("cache_read_input_tokens") or 0,
            cache_write=fields.get("cache_creation_input_tokens") or 0,
            output=fields.get("output_tokens") or 0,
        )

    def reported_usage(self, body: dict[str, Any], usage: Usage) -> Usage:
        return self.decode_usage(self.encode_usage(usage))

    def response_body(self, reply: Reply, call: Call) -> dict[str, Any]:
        message = _message_head(call)
        message["content"] = _blocks(reply)
        message["stop_reason"] = _stop_reason(reply)
        message["usage"] = self.encode_usage(call.usage)
        return message

    async def stream(self, reply: Reply, call: Call) -> AsyncIterator[bytes]:
        usage = self.encode_usage(call.usage)
        head = _message_head(call)
        head["usage"] = {**usage, "output_tokens": min(1, call.usage.output)}
        yield frame({"type": "message_start", "message": head}, event="message_start")
        yield frame({"type": "ping"}, event="ping")
        blocks = _blocks(reply)
        pieces = [_pieces(block) for block in blocks]
        pacer = pacer_for(reply.duration, sum(len(p) for p in pieces))
        for index, (block, deltas) in enumerate(zip(blocks, pieces, strict=True)):
            start = {**block, "text": ""} if block["type"] == "text" else {**block, "input": {}}
            yield _event("content_block_start", index=index, content_block=start)
            for delta in deltas:
                await pacer.step()
                yield _event("content_block_delta", index=index, delta=delta)
            yield _event("content_block_stop", index=index)
        await pacer.finish()
        yield _event(
            "message_delta",
            delta={"stop_reason": _stop_reason(reply), "stop_sequence": None},
            usage=usage,
        )
        yield _event("message_stop")


def _event(kind: str, **fields: Any) -> bytes:
    return frame({"type": kind, **fields}, event=kind)


def _message_head(call: Call) -> dict[str, Any]:
    return {
        "id": new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": call.model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
    }


def _blocks(reply: Reply) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if reply.text or reply.tool_call is None:
        blocks.append({"type": "text", "text": reply.text})
    if reply.tool_call is not None:
        blocks.append(
            {
                "type": "tool_use",
                "id": new_id("toolu_"),
                "name": reply.tool_call.name,
                "input": reply.tool_call.arguments,
            }
        )
    return blocks


def _pieces(block: dict[str, Any]) -> list[dict[str, Any]]:
    if block["type"] == "text":
        return [{"type": "text_delta", "text": piece} for piece in text_pieces(block["text"])]
    arguments = json.dumps(block["input"])
    return [{"type": "input_json_delta", "partial_json": piece} for piece in json_pieces(arguments)]


def _stop_reason(reply: Reply) -> str:
    return "tool_use" if reply.tool_call is not None else "end_turn"


def _json_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    for holder in (body.get("output_format"), (body.get("output_config") or {}).get("format")):
        if isinstance(holder, dict) and holder.get("type") == "json_schema":
            schema = holder.get("schema")
            return schema if isinstance(schema, dict) else {}
    return None
