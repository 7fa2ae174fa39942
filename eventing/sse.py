"""Server-Sent Events framing, the wire format of every job event stream (harness → control
plane → SDK). One parser for all readers: lines in, complete frames out.

Only a frame ended by a blank line counts (one cut off by a dropped connection is never emitted);
comment lines (the heartbeats) are skipped, or handed to `on_comment`.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field


@dataclass(frozen=True)
class SseFrame:
    id: str | None
    event: str
    data: str


@dataclass
class SseParser:
    on_comment: Callable[[str], None] | None = None
    _id: str | None = None
    _event: str = "message"
    _data: list[str] = field(default_factory=list)

    def feed(self, line: str) -> SseFrame | None:
        """The frame this line completes, if any."""
        if line == "":
            frame = SseFrame(self._id, self._event, "\n".join(self._data)) if self._data else None
            self._id, self._event, self._data = None, "message", []
            return frame
        if line.startswith(":"):
            if self.on_comment is not None:
                self.on_comment(line[1:].strip())
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "id":
            self._id = value
        elif name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        return None


def parse_lines(
    lines: Iterable[str], on_comment: Callable[[str], None] | None = None
) -> Iterator[SseFrame]:
    parser = SseParser(on_comment)
    for line in lines:
        if (frame := parser.feed(line)) is not None:
            yield frame


async def aparse_lines(lines: AsyncIterable[str]) -> AsyncIterator[SseFrame]:
    parser = SseParser()
    async for line in lines:
        if (frame := parser.feed(line)) is not None:
            yield frame
