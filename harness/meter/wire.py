"""Which of the four model wire APIs a request speaks, and what the request asked for.

Called by the metering proxy on each request before forwarding it. Never raises: a body that is
not JSON, or not an object, just names no model.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class WireApi(StrEnum):
    ANTHROPIC = "anthropic"
    OPENAI_RESPONSES = "openai_responses"
    OPENAI_CHAT = "openai_chat"
    GEMINI = "gemini"


# Exact paths: side endpoints (`/v1/messages/count_tokens`, `/v1/models`) are not model calls.
_FIXED_PATHS = {
    "/v1/messages": WireApi.ANTHROPIC,
    "/v1/responses": WireApi.OPENAI_RESPONSES,
    "/v1/chat/completions": WireApi.OPENAI_CHAT,
}
# Gemini names the model and the method in the path; `:countTokens` and `:embedContent` are not
# model calls. The model name may be URL-encoded but never holds a `/` or `:`.
_GEMINI_PATH = re.compile(
    r"^/v1(?:beta|alpha)?/models/(?P<model>[^/:]+):(?P<method>generateContent|streamGenerateContent)$"
)

# A request body this size or larger is not read for its facts (a proxy forwards it anyway).
MAX_REQUEST_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class RequestFacts:
    model: str | None
    """The model asked for (body's `model`, or Gemini's path), None when the request names none."""
    streamed: bool


def _path_only(path: str) -> str:
    return path.split("?", 1)[0].split("#", 1)[0]


def wire_api(method: str, path: str) -> WireApi | None:
    """The API of a request, by its method and path (a query string is allowed); None otherwise."""
    if method.upper() != "POST":
        return None
    bare = _path_only(path)
    if bare in _FIXED_PATHS:
        return _FIXED_PATHS[bare]
    if _GEMINI_PATH.match(bare):
        return WireApi.GEMINI
    return None


def request_facts(api: WireApi, body: bytes, *, path: str = "") -> RequestFacts:
    """The model asked for and whether the answer will stream.

    Gemini puts both in the path (`models/{model}:streamGenerateContent`), so pass `path` for it;
    the other three APIs carry them in the body (`model`, `"stream": true`).
    """
    if api is WireApi.GEMINI:
        match = _GEMINI_PATH.match(_path_only(path))
        if match is None:
            return RequestFacts(model=None, streamed=False)
        return RequestFacts(
            model=match["model"], streamed=match["method"] == "streamGenerateContent"
        )
    document = _json_object(body)
    model = document.get("model")
    return RequestFacts(
        model=model if isinstance(model, str) and model else None,
        streamed=document.get("stream") is True,
    )


def _json_object(body: bytes) -> dict[str, Any]:
    if len(body) >= MAX_REQUEST_BYTES:
        return {}
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return {}
    return document if isinstance(document, dict) else {}
