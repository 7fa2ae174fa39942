"""Errors in each wire API's own shape, and the provider's message read out of one.

The meter answers the CLI itself when it cannot or must not forward a call (the provider is
unreachable, the key is not this session's, a budget is spent): in the shape the CLI's own client
parses, so the CLI shows the message instead of a parse failure. And when the provider refuses a
call (401/403), the job's error carries the provider's own message, read here.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

from harness.meter.wire import WireApi


class Refusal(StrEnum):
    """Why the meter answers instead of the provider."""

    UNREACHABLE = "unreachable"
    WRONG_KEY = "wrong_key"
    BUDGET = "budget"


STATUS = {Refusal.UNREACHABLE: 502, Refusal.WRONG_KEY: 401, Refusal.BUDGET: 429}

# Anthropic's error `type`, OpenAI's `type`/`code`, Gemini's `status`, by refusal.
_ANTHROPIC_TYPE = {
    Refusal.UNREACHABLE: "api_error",
    Refusal.WRONG_KEY: "authentication_error",
    Refusal.BUDGET: "rate_limit_error",
}
_OPENAI_CODE = {
    Refusal.UNREACHABLE: "provider_unreachable",
    Refusal.WRONG_KEY: "invalid_api_key",
    Refusal.BUDGET: "insufficient_quota",
}
_GEMINI_STATUS = {
    Refusal.UNREACHABLE: "UNAVAILABLE",
    Refusal.WRONG_KEY: "UNAUTHENTICATED",
    Refusal.BUDGET: "RESOURCE_EXHAUSTED",
}


def error_body(api: WireApi | None, refusal: Refusal, message: str) -> bytes:
    """The JSON body of a refusal in `api`'s shape (OpenAI's when the API is unknown)."""
    document: dict[str, Any]
    if api is WireApi.ANTHROPIC:
        document = {
            "type": "error",
            "error": {"type": _ANTHROPIC_TYPE[refusal], "message": message},
        }
    elif api is WireApi.GEMINI:
        document = {
            "error": {
                "code": STATUS[refusal],
                "message": message,
                "status": _GEMINI_STATUS[refusal],
            }
        }
    else:
        code = _OPENAI_CODE[refusal]
        document = {"error": {"message": message, "type": code, "code": code, "param": None}}
    return json.dumps(document).encode()


# An error body larger than this is not read for its message.
MAX_ERROR_BYTES = 64 * 1024


def provider_message(body: bytes) -> str | None:
    """The message of a provider's error body (any of the four shapes), None when it has none."""
    if len(body) > MAX_ERROR_BYTES:
        return None
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        text = body.decode("utf-8", "replace").strip()
        return text[:500] or None
    if isinstance(document, list) and document:  # Gemini's streamed errors come in a list
        document = document[0]
    if not isinstance(document, dict):
        return None
    error = document.get("error", document)
    if isinstance(error, dict):
        message = error.get("message")
        return message[:500] if isinstance(message, str) and message else None
    return error[:500] if isinstance(error, str) and error else None
