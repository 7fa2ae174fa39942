"""Token usage of one model call, read from the response bytes as a proxy passes them on.

The metering proxy makes one `UsageReader` per model call (after `wire.wire_api` and
`wire.request_facts` on the request), feeds it every response chunk as it forwards it, and calls
`finish()` when the response ends. The reader keeps bounded memory: a streamed answer is framed
into events that are read and dropped at once (`sse.SseFramer`), a plain JSON answer is kept only
up to `MAX_BODY_BYTES`. It never raises: garbage, an error body or a cut stream give
`complete=False`, with zero usage when no usage was read at all.

How each API's fields become `Usage` (input excludes every cached token; output includes
reasoning; reasoning is the part of output that was reasoning):

- Anthropic: `input_tokens` is already uncached; `cache_read_input_tokens`,
  `cache_creation_input_tokens`; `output_tokens`; no reasoning count (thinking is in output).
  Streamed: message_start's usage, then each message_delta's fields over it (the delta is final).
- OpenAI Responses: `input_tokens` includes `input_tokens_details.cached_tokens` (and
  `cache_write_tokens` where sent); `output_tokens` includes
  `output_tokens_details.reasoning_tokens`. Streamed: the usage of response.completed (or
  response.incomplete / response.failed).
- OpenAI Chat Completions: `prompt_tokens` includes `prompt_tokens_details.cached_tokens`;
  `completion_tokens` includes `completion_tokens_details.reasoning_tokens`. Streamed: the chunk
  with a `usage` object, sent only when the request set `stream_options.include_usage`.
- Gemini: `promptTokenCount` includes `cachedContentTokenCount`; `candidatesTokenCount` excludes
  `thoughtsTokenCount`, so output is candidates + thoughts and reasoning is thoughts: the same
  mapping as `harness.adapters.gemini` applies to Gemini CLI's own stats. Streamed: the
  `usageMetadata` of the chunk with a `finishReason` (earlier chunks carry partial counts).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from eventing.agent_events import Usage
from harness.meter.sse import MAX_EVENT_BYTES, SseFramer
from harness.meter.wire import WireApi

# The largest non-streamed answer read; a larger one is passed on but reported incomplete.
MAX_BODY_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class CallUsage:
    usage: Usage
    model: str | None
    """The model as the provider answered (Gemini's `modelVersion`), None when it named none."""
    complete: bool
    """The final usage was read: false for a cut stream, an error body or garbage."""
    first_content_at: int | None
    """The response bytes fed up to and including the chunk that completed the first content
    event (a text, tool-call or reasoning delta); None for a non-streamed answer or a stream that
    sent none."""
    bytes_read: int


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def anthropic_usage(fields: dict[str, Any]) -> Usage:
    return Usage(
        input=_count(fields.get("input_tokens")),
        cache_read=_count(fields.get("cache_read_input_tokens")),
        cache_write=_count(fields.get("cache_creation_input_tokens")),
        output=_count(fields.get("output_tokens")),
    )


def responses_usage(fields: dict[str, Any]) -> Usage:
    details = _object(fields.get("input_tokens_details"))
    cache_read = _count(details.get("cached_tokens"))
    cache_write = _count(details.get("cache_write_tokens"))
    return Usage(
        input=max(0, _count(fields.get("input_tokens")) - cache_read - cache_write),
        cache_read=cache_read,
        cache_write=cache_write,
        output=_count(fields.get("output_tokens")),
        reasoning=_count(_object(fields.get("output_tokens_details")).get("reasoning_tokens")),
    )


def chat_usage(fields: dict[str, Any]) -> Usage:
    cached = _count(_object(fields.get("prompt_tokens_details")).get("cached_tokens"))
    reasoning = _object(fields.get("completion_tokens_details")).get("reasoning_tokens")
    return Usage(
        input=max(0, _count(fields.get("prompt_tokens")) - cached),
        cache_read=cached,
        output=_count(fields.get("completion_tokens")),
        reasoning=_count(reasoning),
    )


def gemini_usage(fields: dict[str, Any]) -> Usage:
    cached = _count(fields.get("cachedContentTokenCount"))
    thoughts = _count(fields.get("thoughtsTokenCount"))
    return Usage(
        input=max(0, _count(fields.get("promptTokenCount")) - cached),
        cache_read=cached,
        output=_count(fields.get("candidatesTokenCount")) + thoughts,
        reasoning=thoughts,
    )


USAGE_DECODERS: dict[WireApi, Callable[[dict[str, Any]], Usage]] = {
    WireApi.ANTHROPIC: anthropic_usage,
    WireApi.OPENAI_RESPONSES: responses_usage,
    WireApi.OPENAI_CHAT: chat_usage,
    WireApi.GEMINI: gemini_usage,
}


class _Tally:
    """What one call's answer has said so far: its usage fields, model, content and end."""

    def __init__(self) -> None:
        self.fields: dict[str, Any] = {}
        self.model: str | None = None
        self.complete = False
        self.content = False

    def name_model(self, value: Any) -> None:
        self.model = _text(value) or self.model


def _read_anthropic_event(event: dict[str, Any], tally: _Tally) -> None:
    kind = event.get("type")
    if kind == "message_start":
        message = _object(event.get("message"))
        tally.name_model(message.get("model"))
        tally.fields.update(_object(message.get("usage")))
    elif kind == "content_block_delta":
        tally.content = True
    elif kind == "message_delta":
        usage = event.get("usage")
        if isinstance(usage, dict):
            # The delta's counts are cumulative; a field it leaves out keeps message_start's.
            tally.fields.update({k: v for k, v in usage.items() if v is not None})
            tally.complete = True


_RESPONSES_ENDS = {"response.completed", "response.incomplete", "response.failed"}


def _read_responses_event(event: dict[str, Any], tally: _Tally) -> None:
    kind = event.get("type")
    if not isinstance(kind, str):
        return
    response = _object(event.get("response"))
    tally.name_model(response.get("model"))
    if kind.endswith(".delta"):
        tally.content = True
    elif kind in _RESPONSES_ENDS and isinstance(response.get("usage"), dict):
        tally.fields = response["usage"]
        tally.complete = True


def _read_chat_event(event: dict[str, Any], tally: _Tally) -> None:
    tally.name_model(event.get("model"))
    choices = event.get("choices")
    for choice in choices if isinstance(choices, list) else []:
        delta = _object(_object(choice).get("delta"))
        if any(delta.get(key) for key in ("content", "tool_calls", "reasoning_content")):
            tally.content = True
    if isinstance(event.get("usage"), dict):
        tally.fields = event["usage"]
        tally.complete = True


def _read_gemini_event(event: dict[str, Any], tally: _Tally) -> None:
    tally.name_model(event.get("modelVersion"))
    if isinstance(event.get("usageMetadata"), dict):
        tally.fields = event["usageMetadata"]
    candidates = event.get("candidates")
    for candidate in candidates if isinstance(candidates, list) else []:
        candidate = _object(candidate)
        parts = _object(candidate.get("content")).get("parts")
        for part in parts if isinstance(parts, list) else []:
            part = _object(part)
            if part.get("text") or part.get("functionCall"):
                tally.content = True
        if candidate.get("finishReason") and tally.fields:
            tally.complete = True


_EVENT_READERS: dict[WireApi, Callable[[dict[str, Any], _Tally], None]] = {
    WireApi.ANTHROPIC: _read_anthropic_event,
    WireApi.OPENAI_RESPONSES: _read_responses_event,
    WireApi.OPENAI_CHAT: _read_chat_event,
    WireApi.GEMINI: _read_gemini_event,
}

# Where a non-streamed answer keeps its model and usage.
_BODY_FIELDS = {
    WireApi.ANTHROPIC: ("model", "usage"),
    WireApi.OPENAI_RESPONSES: ("model", "usage"),
    WireApi.OPENAI_CHAT: ("model", "usage"),
    WireApi.GEMINI: ("modelVersion", "usageMetadata"),
}


def _parse_json(data: bytes | bytearray) -> dict[str, Any] | None:
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        return None
    return document if isinstance(document, dict) else None


class UsageReader:
    """Reads one response's usage from its bytes, fed in chunks cut anywhere."""

    def __init__(
        self,
        api: WireApi,
        streamed: bool,
        *,
        max_body_bytes: int = MAX_BODY_BYTES,
        max_event_bytes: int = MAX_EVENT_BYTES,
    ) -> None:
        self._api = api
        self._streamed = streamed
        self._max_body = max_body_bytes
        self._framer = SseFramer(max_event_bytes=max_event_bytes)
        self._body = bytearray()
        self._too_large = False
        self._tally = _Tally()
        self._bytes_read = 0
        self._first_content_at: int | None = None

    @property
    def content_started(self) -> bool:
        """Whether the answer has sent content yet: a proxy timing the first token checks this
        after each `feed`."""
        return self._first_content_at is not None

    def feed(self, chunk: bytes) -> None:
        self._bytes_read += len(chunk)
        if self._streamed:
            for data in self._framer.feed(chunk):
                self._read_event(data)
            return
        if self._too_large:
            return
        if len(self._body) + len(chunk) > self._max_body:
            self._too_large = True
            self._body = bytearray()
            return
        self._body += chunk

    def _read_event(self, data: bytes) -> None:
        # Most events are content deltas. Once content has begun and the model is named, an
        # event that carries no usage and no end cannot change what is read: not parsed (the
        # meter's largest cost per answer). "usage" covers Gemini's usageMetadata too.
        if (
            self._tally.content
            and self._tally.model is not None
            and b"usage" not in data
            and b"finishReason" not in data
        ):
            return
        event = _parse_json(data)  # `[DONE]` and other non-JSON data carry no usage
        if event is None:
            return
        _EVENT_READERS[self._api](event, self._tally)
        if self._tally.content and self._first_content_at is None:
            self._first_content_at = self._bytes_read

    def finish(self) -> CallUsage:
        if not self._streamed:
            self._read_body()
        tally = self._tally
        usage = USAGE_DECODERS[self._api](tally.fields) if tally.fields else Usage()
        return CallUsage(
            usage=usage,
            model=tally.model,
            complete=tally.complete,
            first_content_at=self._first_content_at,
            bytes_read=self._bytes_read,
        )

    def _read_body(self) -> None:
        if self._too_large or self._tally.complete:
            return
        document = _parse_json(self._body)
        self._body = bytearray()
        if document is None or document.get("error"):
            return
        model_key, usage_key = _BODY_FIELDS[self._api]
        self._tally.name_model(document.get(model_key))
        if isinstance(document.get(usage_key), dict):
            self._tally.fields = document[usage_key]
            self._tally.complete = True
