"""The contract between the app and the four wire-API modules, and request helpers they share.

A wire module (anthropic, openai_responses, openai_chat, gemini) knows one API's JSON: it reads the
API key, turns a request body into a neutral `ModelRequest`, and encodes a `Reply`, a `Failure` and
a `Usage` in that API's own shapes. It knows nothing of scripts or the ledger.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from starlette.requests import Request

from fake_provider.script import Failure, ModelRequest, Reply, ToolSpec
from fake_provider.usage import Usage

# Context the CLIs inject into user messages (Claude Code's reminders, Gemini CLI's session context,
# Codex's environment context): never the prompt, even when it shares a message with it.
INJECTED_CONTEXT = re.compile(
    r"<(system-reminder|session_context|environment_context)>.*?</\1>", re.DOTALL
)


@dataclass(frozen=True)
class Call:
    """What a wire module needs besides the reply: the model name and the usage to report."""

    model: str
    usage: Usage
    body: dict[str, Any] = field(default_factory=dict)
    """The request body, for options that shape the stream (e.g. Chat's include_usage)."""


@dataclass
class Message:
    """A conversation message reduced to what the script looks at."""

    role: str
    texts: list[str] = field(default_factory=list)
    tool_result: bool = False


class WireApi(Protocol):
    name: str
    media_type: str

    def api_key(self, request: Request) -> str | None: ...

    def parse(self, request: Request, body: dict[str, Any]) -> ModelRequest: ...

    def auth_failure(self, api_key: str | None) -> Failure:
        """The 401 this API answers to a missing or rejected key (never echoing the key)."""
        ...

    def error_body(self, failure: Failure) -> dict[str, Any]: ...

    def encode_usage(self, usage: Usage) -> dict[str, Any]: ...

    def decode_usage(self, fields: dict[str, Any]) -> Usage: ...

    def response_body(self, reply: Reply, call: Call) -> dict[str, Any]: ...

    def reported_usage(self, body: dict[str, Any], usage: Usage) -> Usage:
        """What the client will read off the wire for `usage`, normalized back."""
        ...

    def stream(self, reply: Reply, call: Call) -> AsyncIterator[bytes]: ...


def new_id(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(12)}"


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def build_request(
    *,
    api: str,
    model: str,
    messages: Sequence[Message],
    system: Sequence[str] = (),
    tools: Sequence[ToolSpec] = (),
    stream: bool = False,
    json_schema: dict[str, Any] | None = None,
) -> ModelRequest:
    """The neutral request: the last user prompt and whether a tool result came after it.

    The prompt is the last text part, injected context removed, of the last user message that is
    not a tool result: CLIs put their own context in earlier parts of the same message.
    """
    prompt_at = None
    prompt = ""
    for index, message in enumerate(messages):
        if message.role != "user" or message.tool_result:
            continue
        texts = [INJECTED_CONTEXT.sub("", text).strip() for text in message.texts]
        texts = [text for text in texts if text]
        if texts:
            prompt_at, prompt = index, texts[-1]
    later = messages[prompt_at + 1 :] if prompt_at is not None else messages
    context = "\n".join([*system, *(t for m in messages for t in m.texts)])
    injected = [
        found.group(0)
        for message in messages
        if message.role == "user"
        for text in message.texts
        for found in INJECTED_CONTEXT.finditer(text)
    ]
    return ModelRequest(
        api=api,
        model=model,
        prompt=prompt,
        tool_result_after_prompt=any(m.tool_result for m in later),
        tools=tuple(tools),
        context=context,
        system="\n".join(system),
        injected_context="\n".join(injected),
        stream=stream,
        json_schema=json_schema,
    )


def description_of(tool: dict[str, Any]) -> str:
    """A tool declaration's description, "" when it has none (or not a string)."""
    description = tool.get("description")
    return description if isinstance(description, str) else ""


def texts_of(content: Any, *text_types: str) -> list[str]:
    """Text of a message `content` that is a string or a list of typed parts."""
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        return []
    return [
        part["text"]
        for part in content
        if isinstance(part, dict)
        and part.get("type") in text_types
        and isinstance(part.get("text"), str)
    ]


OPENAI_ERRORS = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}


def mask_key(api_key: str | None) -> str:
    """How OpenAI shows a rejected key: a few characters at each end, never the whole key."""
    if not api_key or len(api_key) < 12:
        return "****"
    return f"{api_key[:3]}{'*' * (len(api_key) - 7)}{api_key[-4:]}"


def openai_auth_failure(api_key: str | None) -> Failure:
    return Failure(
        401,
        f"Incorrect API key provided: {mask_key(api_key)}. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
    )


def openai_error_body(failure: Failure) -> dict[str, Any]:
    """The error object both OpenAI APIs return: `{"error": {message, type, param, code}}`."""
    kind, code = OPENAI_ERRORS.get(failure.status, ("server_error", None))
    return {"error": {"message": failure.message, "type": kind, "param": None, "code": code}}
