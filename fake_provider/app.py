"""The Starlette app: routes each path the four CLIs call to a wire module, the script, the ledger.

`create_app()` builds it around a `FakeProvider`, which owns the script and the ledger and answers
model calls: check the key (one with "bad" as a word of its own gets the API's own 401), ask the script, record
the call, then encode the reply in the API's format, streamed or not. Side endpoints the CLIs touch
(model lists, token counts) get small plausible answers; any other path is logged and recorded as
"unknown".
"""

from __future__ import annotations

import asyncio
import gzip
import itertools
import json
import logging
from collections.abc import AsyncIterator, Collection
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from fake_provider.anthropic import AnthropicMessages
from fake_provider.gemini import Gemini
from fake_provider.ledger import SYSTEM_LIMIT, TOOL_DESCRIPTION_LIMIT, Ledger, clip, key_id
from fake_provider.openai_chat import OpenAIChat
from fake_provider.openai_responses import OpenAIResponses
from fake_provider.script import DefaultScript, Failure, ModelRequest, Reply, Script
from fake_provider.side_endpoints import SideEndpoints, is_bad_key
from fake_provider.sse import SSE_HEADERS
from fake_provider.usage import AUX, FIXED
from fake_provider.wire import Call, WireApi

log = logging.getLogger("fake_provider")

ANTHROPIC = AnthropicMessages()
RESPONSES = OpenAIResponses()
CHAT = OpenAIChat()
GEMINI = Gemini()
GEMINI_MODEL_METHODS = ("streamGenerateContent", "generateContent")


class FakeProvider:
    """Owns the script and the ledger; answers model calls for any wire API."""

    def __init__(
        self,
        script: Script | None = None,
        *,
        ledger: Ledger | None = None,
        dump_dir: Path | None = None,
        keys: Collection[str] | None = None,
    ) -> None:
        self.script: Script = script or DefaultScript()
        # The only keys accepted, like a real provider's; None accepts any but a "bad" one.
        self.keys = frozenset(keys) if keys is not None else None
        self.ledger = ledger or Ledger()
        self.dump_dir = dump_dir
        self._dump_numbers = itertools.count(1)
        self.side = SideEndpoints(self.ledger)

    async def model_call(self, api: WireApi, request: Request) -> Response:
        try:
            body = await read_json(request)
            parsed = api.parse(request, body)
        except (ValueError, TypeError, AttributeError) as error:
            return self._reject(api, request, None, Failure(400, f"invalid request body: {error}"))
        self._dump(api.name, request, body)
        key = api.api_key(request)
        if not key or is_bad_key(key) or (self.keys is not None and key not in self.keys):
            return self._reject(api, request, parsed, api.auth_failure(key))
        answer = self.script.reply(parsed)
        if isinstance(answer, Failure):
            return self._reject(api, request, parsed, answer)
        counted = bool(parsed.tools)
        usage = answer.usage if answer.usage is not None else (FIXED if counted else AUX)
        call = Call(model=parsed.model or "fake-model", usage=usage, body=body)
        entry = self.ledger.record(
            api=api.name,
            method=request.method,
            path=request.url.path,
            kind="model",
            status=200,
            model=parsed.model,
            key_id=key_id(key),
            stream=parsed.stream,
            **_offered(parsed),
            answer=answer.describe(),
            usage=api.reported_usage(body, usage),
            counted=counted,
            finished=False,
        )
        log.info("%s %s -> %s", request.method, request.url.path, answer.describe()["kind"])
        if parsed.stream:
            return StreamingResponse(
                self._stream(api, answer, call, entry.seq),
                media_type=api.media_type,
                headers=SSE_HEADERS,
            )
        if answer.duration > 0:
            await asyncio.sleep(answer.duration)
        self.ledger.mark_finished(entry.seq)
        return JSONResponse(api.response_body(answer, call))

    async def _stream(
        self, api: WireApi, reply: Reply, call: Call, seq: int
    ) -> AsyncIterator[bytes]:
        async for chunk in api.stream(reply, call):
            yield chunk
        self.ledger.mark_finished(seq)

    def _reject(
        self, api: WireApi, request: Request, parsed: ModelRequest | None, failure: Failure
    ) -> Response:
        self.ledger.record(
            api=api.name,
            method=request.method,
            path=request.url.path,
            kind="model",
            status=failure.status,
            model=parsed.model if parsed else None,
            key_id=key_id(api.api_key(request)),
            stream=parsed.stream if parsed else False,
            **(_offered(parsed) if parsed else {}),
            answer=failure.describe(),
        )
        log.info("%s %s -> %s", request.method, request.url.path, failure.status)
        return JSONResponse(api.error_body(failure), status_code=failure.status)

    def _dump(self, api: str, request: Request, body: dict[str, Any]) -> None:
        """With `dump_dir` set, keep each model request (headers without secrets, body) on disk."""
        if self.dump_dir is None:
            return
        self.dump_dir.mkdir(parents=True, exist_ok=True)
        secret = ("authorization", "x-api-key", "x-goog-api-key")
        headers = {k: ("<redacted>" if k in secret else v) for k, v in request.headers.items()}
        index = next(self._dump_numbers)
        record = {
            "path": str(request.url.path),
            "query": str(request.url.query),
            "headers": headers,
        }
        (self.dump_dir / f"{index:04d}-{api}.json").write_text(
            json.dumps({**record, "body": body}, indent=1)
        )

    # Route handlers -------------------------------------------------------------------------

    async def anthropic_messages(self, request: Request) -> Response:
        return await self.model_call(ANTHROPIC, request)

    async def openai_responses(self, request: Request) -> Response:
        return await self.model_call(RESPONSES, request)

    async def openai_chat(self, request: Request) -> Response:
        return await self.model_call(CHAT, request)

    async def gemini_post(self, request: Request) -> Response:
        method = request.path_params["target"].rpartition(":")[2]
        if method in GEMINI_MODEL_METHODS:
            return await self.model_call(GEMINI, request)
        return await self.side.gemini_post(request, method)

    async def ledger_json(self, request: Request) -> Response:
        return JSONResponse(self.ledger.as_dict())

    async def reset(self, request: Request) -> Response:
        self.ledger.reset()
        return JSONResponse({"reset": True})

    def routes(self) -> list[Route]:
        side = self.side
        return [
            Route("/v1/messages", self.anthropic_messages, methods=["POST"]),
            Route("/v1/messages/count_tokens", side.anthropic_count_tokens, methods=["POST"]),
            Route("/v1/responses", self.openai_responses, methods=["POST"]),
            Route("/v1/chat/completions", self.openai_chat, methods=["POST"]),
            Route("/v1/models", side.models_list, methods=["GET"]),
            Route("/v1/models/{model:path}", side.model_info, methods=["GET"]),
            Route("/v1beta/models", side.gemini_models, methods=["GET"]),
            Route("/v1beta/models/{target:path}", self.gemini_post, methods=["POST"]),
            Route("/v1beta/models/{target:path}", side.gemini_model_info, methods=["GET"]),
            Route("/", side.root, methods=["GET"]),
            Route("/_fake/ledger", self.ledger_json, methods=["GET"]),
            Route("/_fake/reset", self.reset, methods=["POST"]),
            Route("/{path:path}", side.unknown, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
        ]


def _offered(parsed: ModelRequest) -> dict[str, Any]:
    """The ledger's record of what the request offered the model, clipped (see the ledger)."""
    return {
        "tools_offered": tuple(tool.name for tool in parsed.tools),
        "tool_descriptions": tuple(
            clip(tool.description, TOOL_DESCRIPTION_LIMIT) for tool in parsed.tools
        ),
        "system": clip(parsed.system, SYSTEM_LIMIT),
        "injected_context": clip(parsed.injected_context, SYSTEM_LIMIT),
        "prompt": parsed.prompt,
    }


async def read_json(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if request.headers.get("content-encoding", "").lower() == "gzip":
        raw = gzip.decompress(raw)
    data = json.loads(raw or b"{}")
    if not isinstance(data, dict):
        raise ValueError("the body must be a JSON object")
    return data


def create_app(script: Script | None = None, *, provider: FakeProvider | None = None) -> Starlette:
    """The fake provider as an ASGI app; `app.state.provider` holds its `FakeProvider`."""
    provider = provider or FakeProvider(script)
    app = Starlette(routes=provider.routes())
    app.state.provider = provider
    return app
