"""A small SSE reader for tests: turns an httpx streaming response into parsed frames."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx

from eventing.sse import SseFrame, parse_lines


class SseEvent(SseFrame):
    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.data)


def iter_sse(response: httpx.Response, comments: list[str] | None = None) -> Iterator[SseEvent]:
    """Parsed events; SSE comment lines (heartbeats) are appended to `comments` if given."""
    for frame in parse_lines(
        response.iter_lines(), comments.append if comments is not None else None
    ):
        yield SseEvent(frame.id, frame.event, frame.data)
