"""An incremental server-sent-event framer that keeps at most one event's data in memory.

Fed bytes cut anywhere (inside a line, a `\\r\\n`, a UTF-8 character), it yields each complete
event's `data` as bytes. Lines end with `\\n`, `\\r\\n` or `\\r`, as the SSE spec allows; the
bytes of those never occur inside a multi-byte UTF-8 character, so framing works on bytes and
decoding is left to the JSON parser. An event whose data outgrows the cap is skipped whole
(counted in `dropped`), so a hostile or enormous stream costs bounded memory.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

# The largest event kept. A Responses stream's last event repeats the whole answer, so this
# bounds the answer whose usage can still be read off its stream.
MAX_EVENT_BYTES = 8 * 1024 * 1024

_LINE_END = re.compile(rb"\r\n|\r|\n")


class SseFramer:
    def __init__(self, *, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self._max = max_event_bytes
        self._line = bytearray()
        self._line_length = 0  # also counts what an oversized event did not keep
        self._data = bytearray()
        self._has_data = False
        self._event_size = 0
        self._oversized = False
        self._skip_lf = False  # the last chunk ended in `\r`: a `\n` opening the next is its pair
        self.dropped = 0

    def feed(self, chunk: bytes) -> Iterator[bytes]:
        """The data of each event that `chunk` completes."""
        start = 0
        if self._skip_lf and chunk[:1] == b"\n":
            start = 1
        self._skip_lf = False
        for match in _LINE_END.finditer(chunk, start):
            self._take(chunk[start : match.start()])
            start = match.end()
            if match.group() == b"\r" and start == len(chunk):
                self._skip_lf = True
            event = self._end_line()
            if event is not None:
                yield event
        self._take(chunk[start:])

    def _take(self, piece: bytes) -> None:
        self._line_length += len(piece)
        self._event_size += len(piece)
        if self._event_size > self._max:
            self._oversized = True
            self._line.clear()
            self._data.clear()
        if not self._oversized:
            self._line += piece

    def _end_line(self) -> bytes | None:
        line = bytes(self._line)
        length = self._line_length
        self._line.clear()
        self._line_length = 0
        if length:
            self._event_size += 1  # the line end counts towards the cap too
            if not self._oversized and line.startswith(b"data"):
                self._add_field(line)
            return None
        # A blank line ends the event.
        data = bytes(self._data) if self._has_data and not self._oversized else None
        if self._oversized:
            self.dropped += 1
        self._data.clear()
        self._has_data = False
        self._event_size = 0
        self._oversized = False
        return data

    def _add_field(self, line: bytes) -> None:
        name, colon, value = line.partition(b":")
        if name != b"data":
            return
        if colon and value.startswith(b" "):
            value = value[1:]
        if self._has_data:
            self._data += b"\n"
        self._data += value
        self._has_data = True
