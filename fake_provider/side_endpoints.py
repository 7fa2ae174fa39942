"""Plausible answers for the non-generating endpoints around the model APIs.

Model lists, model info, token counts and embeddings, in each API's shape, so a CLI that probes them
carries on. Every hit is recorded in the ledger (never counted); an unknown path is logged as a
warning, recorded with kind "unknown" and answered 404 in a neutral JSON error.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from fake_provider.ledger import Ledger
from fake_provider.usage import FIXED

log = logging.getLogger("fake_provider")

MODEL_IDS = ("fake-model",)
EMBEDDING_SIZE = 8


class SideEndpoints:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def _record(self, request: Request, api: str, kind: str, status: int = 200) -> None:
        self.ledger.record(
            api=api, method=request.method, path=request.url.path, kind=kind, status=status
        )

    def _refused(self, request: Request, api: str) -> Response | None:
        key = _api_key(request)
        if key and not is_bad_key(key):
            return None
        self._record(request, api, "models", status=401)
        message = "invalid api key" if key else "no api key"
        return JSONResponse(
            {"error": {"message": message, "type": "authentication_error"}}, status_code=401
        )

    async def root(self, request: Request) -> Response:
        """`GET`/`HEAD /`: Claude Code probes the base URL before its first call."""
        self._record(request, "none", "probe")
        return JSONResponse({"service": "fake_provider"})

    async def anthropic_count_tokens(self, request: Request) -> Response:
        self._record(request, "anthropic", "count_tokens")
        return JSONResponse({"input_tokens": FIXED.prompt})

    async def models_list(self, request: Request) -> Response:
        """`GET /v1/models`: Anthropic's shape when the caller speaks Anthropic, else OpenAI's.
        Like the real ones, it wants a key: one containing "bad" (or none) gets a 401."""
        if refused := self._refused(request, "anthropic" if _is_anthropic(request) else "openai"):
            return refused
        if _is_anthropic(request):
            self._record(request, "anthropic", "models")
            data = [_anthropic_model(model) for model in MODEL_IDS]
            return JSONResponse(
                {
                    "data": data,
                    "has_more": False,
                    "first_id": MODEL_IDS[0],
                    "last_id": MODEL_IDS[-1],
                }
            )
        self._record(request, "openai", "models")
        return JSONResponse({"object": "list", "data": [_openai_model(m) for m in MODEL_IDS]})

    async def model_info(self, request: Request) -> Response:
        model = request.path_params["model"]
        if _is_anthropic(request):
            self._record(request, "anthropic", "models")
            return JSONResponse(_anthropic_model(model))
        self._record(request, "openai", "models")
        return JSONResponse(_openai_model(model))

    async def gemini_models(self, request: Request) -> Response:
        if (refused := self._refused(request, "gemini")) is not None:
            return refused
        self._record(request, "gemini", "models")
        return JSONResponse({"models": [_gemini_model(model) for model in MODEL_IDS]})

    async def gemini_model_info(self, request: Request) -> Response:
        self._record(request, "gemini", "models")
        return JSONResponse(_gemini_model(request.path_params["target"]))

    async def gemini_post(self, request: Request, method: str) -> Response:
        if method == "countTokens":
            self._record(request, "gemini", "count_tokens")
            return JSONResponse({"totalTokens": FIXED.prompt})
        if method == "embedContent":
            self._record(request, "gemini", "embed")
            return JSONResponse({"embedding": {"values": [0.0] * EMBEDDING_SIZE}})
        if method == "batchEmbedContents":
            self._record(request, "gemini", "embed")
            count = len((await request.json()).get("requests") or [])
            return JSONResponse({"embeddings": [{"values": [0.0] * EMBEDDING_SIZE}] * count})
        return await self.unknown(request)

    async def unknown(self, request: Request) -> Response:
        log.warning("unknown request: %s %s", request.method, request.url.path)
        self._record(request, "unknown", "unknown", status=404)
        message = f"the fake provider does not serve {request.method} {request.url.path}"
        return JSONResponse({"error": {"message": message, "type": "not_found"}}, status_code=404)


# A key with "bad" as a word of its own is refused (`fake_provider.app` refuses model calls with
# it too): "bad-key", "a-bad-key", "sk-bad-0123". Not "bad" inside letters or digits: random keys
# such as `f"run-{uuid4().hex[:8]}"` hold "bad" now and then and must not be refused for it.
_BAD_KEY = re.compile(r"(?<![0-9A-Za-z])bad(?![0-9A-Za-z])")


def is_bad_key(key: str) -> bool:
    return _BAD_KEY.search(key) is not None


def _api_key(request: Request) -> str | None:
    headers = request.headers
    bearer = headers.get("authorization", "")
    if bearer.lower().startswith("bearer "):
        return bearer[7:].strip() or None
    return (
        headers.get("x-api-key") or headers.get("x-goog-api-key") or request.query_params.get("key")
    )


def _is_anthropic(request: Request) -> bool:
    return "anthropic-version" in request.headers or "x-api-key" in request.headers


def _anthropic_model(model: str) -> dict[str, Any]:
    return {
        "type": "model",
        "id": model,
        "display_name": model,
        "created_at": "2025-01-01T00:00:00Z",
    }


def _openai_model(model: str) -> dict[str, Any]:
    return {
        "id": model,
        "object": "model",
        "created": int(time.time()),
        "owned_by": "fake-provider",
    }


def _gemini_model(model: str) -> dict[str, Any]:
    name = model if model.startswith("models/") else f"models/{model}"
    return {
        "name": name,
        "displayName": name.removeprefix("models/"),
        "inputTokenLimit": 1_048_576,
        "outputTokenLimit": 65_536,
        "supportedGenerationMethods": ["generateContent", "countTokens"],
    }
