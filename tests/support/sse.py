"""A small SSE reader for tests: turns an httpx streaming response into parsed events."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass
class SseEvent:
    id: str | None
    event: str
    data: str

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.data)


def iter_sse(response: httpx.Response, comments: list[str] | None = None) -> Iterator[SseEvent]:
    """Parsed events; SSE comment lines (heartbeats) are appended to `comments` if given."""
    event_id, event, data = None, "message", []
    for line in response.iter_lines():
        if line == "":
            if data:
                yield SseEvent(event_id, event, "\n".join(data))
            event_id, event, data = None, "message", []
        elif line.startswith(":"):
            if comments is not None:
                comments.append(line[1:].strip())
        else:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "id":
                event_id = value
            elif name == "event":
                event = value
            elif name == "data":
                data.append(value)
