"""Server-sent-event framing and pacing shared by the four wire modules.

Each API frames its stream a little differently (named events or not, `\\n\\n` or `\\r\\n\\r\\n`);
the wire modules pick the framing, this module only builds the bytes and spaces them in time.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def frame(data: Any, *, event: str | None = None, terminator: str = "\n\n") -> bytes:
    """One SSE frame: an optional `event:` line, then one compact JSON (or raw) `data:` line."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}{terminator}".encode()


def text_pieces(text: str) -> list[str]:
    """Split text into word-sized deltas that join back to the same text."""
    pieces = re.findall(r"\S+\s*|\s+", text)
    return pieces or [""]


def json_pieces(text: str, count: int = 3) -> list[str]:
    """Split a JSON string into `count` roughly equal fragments (clients must concatenate them)."""
    if len(text) < count:
        return [text]
    size = -(-len(text) // count)
    return [text[i : i + size] for i in range(0, len(text), size)]


class Pacer:
    """Spreads `steps` stream deltas over `duration` seconds: the first goes out at once."""

    def __init__(self, duration: float, steps: int) -> None:
        self._gap = duration / (steps - 1) if steps > 1 else 0.0
        self._tail = duration if steps <= 1 else 0.0
        self._started = False

    async def step(self) -> None:
        if self._started and self._gap > 0:
            await asyncio.sleep(self._gap)
        self._started = True

    async def finish(self) -> None:
        """Called after the last delta: a one-delta answer still takes the whole duration."""
        if self._tail > 0:
            await asyncio.sleep(self._tail)


def pacer_for(duration: float, steps: int) -> Pacer:
    return Pacer(duration, max(steps, 1))
