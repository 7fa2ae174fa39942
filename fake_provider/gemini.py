"""Gemini API (`POST /v1beta/models/{model}:streamGenerateContent?alt=sse` and `:generateContent`),
as Gemini CLI calls it.

Stream: unnamed `data:` frames terminated by `\\r\\n\\r\\n` (as Google sends them), each a
GenerateContentResponse with one candidate; text arrives in several chunks, a function call
whole in one; the last chunk has `finishReason` and the complete `usageMetadata` (earlier chunks
carry only the prompt count). Usage: `promptTokenCount` is the whole prompt, with
`cachedContentTokenCount` part of it; `candidatesTokenCount` excludes `thoughtsTokenCount`.
No cache-write field.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request

from fake_provider.script import Failure, ModelRequest, Reply, ToolSpec
from fake_provider.sse import frame, pacer_for, text_pieces
from fake_provider.usage import Usage
from fake_provider.wire import Call, Message, build_request, description_of, new_id

STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


class Gemini:
    name = "gemini"
    media_type = "text/event-stream"

    def api_key(self, request: Request) -> str | None:
        return request.headers.get("x-goog-api-key") or request.query_params.get("key")

    def parse(self, request: Request, body: dict[str, Any]) -> ModelRequest:
        target = request.path_params.get("target", "")
        model, _, method = target.rpartition(":")
        system = _texts((body.get("systemInstruction") or {}).get("parts"))
        messages = [
            Message(
                role="assistant" if content.get("role") == "model" else "user",
                texts=_texts(content.get("parts")),
                tool_result=any("functionResponse" in part for part in content.get("parts") or []),
            )
            for content in body.get("contents") or []
        ]
        tools = [
            ToolSpec(
                str(decl.get("name", "")),
                decl.get("parametersJsonSchema") or decl.get("parameters") or {},
                description_of(decl),
            )
            for tool in body.get("tools") or []
            for decl in tool.get("functionDeclarations") or []
        ]
        config = body.get("generationConfig") or {}
        schema = None
        if config.get("responseMimeType") == "application/json":
            schema = config.get("responseJsonSchema") or config.get("responseSchema") or {}
        return build_request(
            api=self.name,
            model=model,
            messages=messages,
            system=system,
            tools=tools,
            stream=method == "streamGenerateContent",
            json_schema=schema,
        )

    def auth_failure(self, api_key: str | None) -> Failure:
        return Failure(401, "API key not valid. Please pass a valid API key.")

    def error_body(self, failure: Failure) -> dict[str, Any]:
        status = STATUS_NAMES.get(failure.status, "UNKNOWN")
        return {"error": {"code": failure.status, "message": failure.message, "status": status}}

    def encode_usage(self, usage: Usage) -> dict[str, Any]:
        return {
            "promptTokenCount": usage.prompt,
            "candidatesTokenCount": usage.output - usage.reasoning,
            "totalTokenCount": usage.prompt + usage.output,
            "cachedContentTokenCount": usage.cache_read,
            "thoughtsTokenCount": usage.reasoning,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": usage.prompt}],
        }

    def decode_usage(self, fields: dict[str, Any]) -> Usage:
        cached = fields.get("cachedContentTokenCount") or 0
        thoughts = fields.get("thoughtsTokenCount") or 0
        return Usage(
            input=(fields.get("promptTokenCount") or 0) - cached,
            cache_read=cached,
            output=(fields.get("candidatesTokenCount") or 0) + thoughts,
            reasoning=thoughts,
        )

    def reported_usage(self, body: dict[str, Any], usage: Usage) -> Usage:
        return self.decode_usage(self.encode_usage(usage))

    def response_body(self, reply: Reply, call: Call) -> dict[str, Any]:
        return self._chunk(call, _parts(reply), finished=True, usage=self.encode_usage(call.usage))

    async def stream(self, reply: Reply, call: Call) -> AsyncIterator[bytes]:
        usage = self.encode_usage(call.usage)
        partial = {"promptTokenCount": usage["promptTokenCount"]}
        partial["totalTokenCount"] = usage["promptTokenCount"]
        chunks = [[{"text": piece}] for piece in text_pieces(reply.text)] if reply.text else []
        if reply.tool_call is not None:
            chunks.append(_parts(Reply(tool_call=reply.tool_call)))
        chunks = chunks or [[{"text": ""}]]
        # A slow one-chunk answer still sends its content at once and finishes in a later chunk.
        if reply.duration > 0 and len(chunks) == 1:
            chunks.append([{"text": ""}])
        pacer = pacer_for(reply.duration, len(chunks))
        response_id = new_id("")
        for index, parts in enumerate(chunks):
            await pacer.step()
            last = index == len(chunks) - 1
            data = self._chunk(call, parts, finished=last, usage=usage if last else partial)
            data["responseId"] = response_id
            yield frame(data, terminator="\r\n\r\n")

    def _chunk(
        self, call: Call, parts: list[dict[str, Any]], *, finished: bool, usage: dict[str, Any]
    ) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
        if finished:
            candidate["finishReason"] = "STOP"
        return {
            "candidates": [candidate],
            "usageMetadata": usage,
            "modelVersion": call.model,
            "responseId": new_id(""),
        }


def _texts(parts: Any) -> list[str]:
    if not isinstance(parts, list):
        return []
    return [
        part["text"]
        for part in parts
        if isinstance(part, dict) and isinstance(part.get("text"), str) and not part.get("thought")
    ]


def _parts(reply: Reply) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    if reply.text or reply.tool_call is None:
        parts.append({"text": reply.text})
    if reply.tool_call is not None:
        call = {"name": reply.tool_call.name, "args": reply.tool_call.arguments}
        parts.append({"functionCall": call})
    return parts
