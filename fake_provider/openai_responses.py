"""OpenAI Responses API (`POST /v1/responses`), as Codex CLI calls it.

Stream (named events, each with a `sequence_number`): response.created, response.in_progress, per
output item response.output_item.added, then for a message content_part.added / output_text.delta /
output_text.done / content_part.done, for a function call function_call_arguments.delta / .done,
then response.output_item.done; finally response.completed carrying the whole response and usage.
Usage: `input_tokens` is the whole prompt; `input_tokens_details.cached_tokens` and
`.cache_write_tokens` (which Codex reads) are parts of it; `output_tokens` includes
`output_tokens_details.reasoning_tokens`.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request

from fake_provider.script import Failure, ModelRequest, Reply, ToolSpec
from fake_provider.sse import Pacer, frame, json_pieces, pacer_for, text_pieces
from fake_provider.usage import Usage
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

TEXT_PART_TYPES = ("input_text", "output_text", "text")


class OpenAIResponses:
    name = "openai_responses"
    media_type = "text/event-stream"

    def api_key(self, request: Request) -> str | None:
        return bearer_token(request)

    def parse(self, request: Request, body: dict[str, Any]) -> ModelRequest:
        system = [body["instructions"]] if isinstance(body.get("instructions"), str) else []
        items = body.get("input")
        if isinstance(items, str):
            items = [{"type": "message", "role": "user", "content": items}]
        messages: list[Message] = []
        for item in items or []:
            kind = item.get("type", "message")
            if kind == "message":
                role = str(item.get("role"))
                texts = texts_of(item.get("content"), *TEXT_PART_TYPES)
                if role in ("system", "developer"):
                    system.extend(texts)
                else:
                    messages.append(Message(role=role, texts=texts))
            elif str(kind).endswith("_output"):
                messages.append(Message(role="tool", tool_result=True))
        tools = [
            ToolSpec(
                str(tool.get("name") or tool.get("type", "")),
                tool.get("parameters") or {},
                description_of(tool),
            )
            for tool in body.get("tools") or []
        ]
        text_format = (body.get("text") or {}).get("format") or {}
        schema = text_format.get("schema") if text_format.get("type") == "json_schema" else None
        return build_request(
            api=self.name,
            model=str(body.get("model", "")),
            messages=messages,
            system=system,
            tools=tools,
            stream=bool(body.get("stream")),
            json_schema=schema if isinstance(schema, dict) else None,
        )

    def auth_failure(self, api_key: str | None) -> Failure:
        return openai_auth_failure(api_key)

    def error_body(self, failure: Failure) -> dict[str, Any]:
        return openai_error_body(failure)

    def encode_usage(self, usage: Usage) -> dict[str, Any]:
        return {
            "input_tokens": usage.prompt,
            "input_tokens_details": {
                "cached_tokens": usage.cache_read,
                "cache_write_tokens": usage.cache_write,
            },
            "output_tokens": usage.output,
            "output_tokens_details": {"reasoning_tokens": usage.reasoning},
            "total_tokens": usage.prompt + usage.output,
        }

    def decode_usage(self, fields: dict[str, Any]) -> Usage:
        details = fields.get("input_tokens_details") or {}
        cache_read = details.get("cached_tokens") or 0
        cache_write = details.get("cache_write_tokens") or 0
        return Usage(
            input=(fields.get("input_tokens") or 0) - cache_read - cache_write,
            cache_read=cache_read,
            cache_write=cache_write,
            output=fields.get("output_tokens") or 0,
            reasoning=(fields.get("output_tokens_details") or {}).get("reasoning_tokens") or 0,
        )

    def reported_usage(self, body: dict[str, Any], usage: Usage) -> Usage:
        return self.decode_usage(self.encode_usage(usage))

    def response_body(self, reply: Reply, call: Call) -> dict[str, Any]:
        return self._response(call, _items(reply), status="completed", usage=call.usage)

    async def stream(self, reply: Reply, call: Call) -> AsyncIterator[bytes]:
        events = _Sequencer()
        created = self._response(call, [], status="in_progress", usage=None)
        yield events.emit("response.created", response=created)
        yield events.emit("response.in_progress", response=created)
        items = _items(reply)
        pacer = pacer_for(reply.duration, sum(len(_item_pieces(item)) for item in items))
        for index, item in enumerate(items):
            async for chunk in _stream_item(events, pacer, index, item):
                yield chunk
        await pacer.finish()
        done = self._response(call, items, status="completed", usage=call.usage)
        done["id"] = created["id"]
        yield events.emit("response.completed", response=done)

    def _response(
        self, call: Call, items: list[dict[str, Any]], *, status: str, usage: Usage | None
    ) -> dict[str, Any]:
        return {
            "id": new_id("resp_"),
            "object": "response",
            "created_at": int(time.time()),
            "status": status,
            "model": call.model,
            "output": items,
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "error": None,
            "incomplete_details": None,
            "usage": self.encode_usage(usage) if usage is not None else None,
        }


class _Sequencer:
    def __init__(self) -> None:
        self._next = 0

    def emit(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, "sequence_number": self._next, **fields}
        self._next += 1
        return frame(data, event=kind)


def _items(reply: Reply) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    if reply.text or reply.tool_call is None:
        items.append(
            {
                "id": new_id("msg_"),
                "type": "message",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": reply.text, "annotations": []}],
            }
        )
    if reply.tool_call is not None:
        items.append(
            {
                "id": new_id("fc_"),
                "type": "function_call",
                "status": "completed",
                "call_id": new_id("call_"),
                "name": reply.tool_call.name,
                "arguments": json.dumps(reply.tool_call.arguments),
            }
        )
    return items


def _item_pieces(item: dict[str, Any]) -> list[str]:
    if item["type"] == "message":
        return text_pieces(item["content"][0]["text"])
    return json_pieces(item["arguments"])


async def _stream_item(
    events: _Sequencer, pacer: Pacer, index: int, item: dict[str, Any]
) -> AsyncIterator[bytes]:
    where = {"item_id": item["id"], "output_index": index}
    if item["type"] == "message":
        yield events.emit(
            "response.output_item.added",
            output_index=index,
            item={**item, "status": "in_progress", "content": []},
        )
        part = item["content"][0]
        empty_part = {**part, "text": ""}
        yield events.emit("response.content_part.added", **where, content_index=0, part=empty_part)
        for piece in _item_pieces(item):
            await pacer.step()
            yield events.emit("response.output_text.delta", **where, content_index=0, delta=piece)
        yield events.emit("response.output_text.done", **where, content_index=0, text=part["text"])
        yield events.emit("response.content_part.done", **where, content_index=0, part=part)
    else:
        yield events.emit(
            "response.output_item.added",
            output_index=index,
            item={**item, "status": "in_progress", "arguments": ""},
        )
        for piece in _item_pieces(item):
            await pacer.step()
            yield events.emit("response.function_call_arguments.delta", **where, delta=piece)
        yield events.emit(
            "response.function_call_arguments.done", **where, arguments=item["arguments"]
        )
    yield events.emit("response.output_item.done", output_index=index, item=item)
