"""An incremental server-sent-event framer that keeps at most one event's data in memory.

Fed bytes cut anywhere (inside a line, a `\\r\\n`, a UTF-8 character), it yields each complete
event's `data` as bytes. Lines end with `\\n`, `\\r\\n` or `\\r`, as the SSE spec allows; the
bytes of those never occur inside a multi-byte UTF-8 character, so framing works on bytes and
decoding is left to the JSON parser. An event whose data outgrows the cap is skipped whole
(counted in `dropped`), so a hostile or enormous stream costs bounded memory.

Events are found with `bytes.find` and lines with `bytes.split` (C loops over the buffer), not a
Python step per line: the meter reads every streamed answer, and this is most of that reading.
"""

from __future__ import annotations

from collections.abc import Iterator

# The largest event kept. A Responses stream's last event repeats the whole answer, so this
# bounds the answer whose usage can still be read off its stream.
MAX_EVENT_BYTES = 8 * 1024 * 1024

_EVENT_END = b"\n\n"


class SseFramer:
    def __init__(self, *, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self._max = max_event_bytes
        self._tail = bytearray()  # the event not yet ended, line ends made `\n`
        self._oversized = False  # the event being read outgrew the cap: skipped to its end
        self._skip_lf = False  # the last chunk ended in `\r`: a `\n` opening the next is its pair
        self.dropped = 0

    def feed(self, chunk: bytes) -> Iterator[bytes]:
        """The data of each event that `chunk` completes."""
        if self._skip_lf and chunk[:1] == b"\n":
            chunk = chunk[1:]
        self._skip_lf = chunk[-1:] == b"\r"
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        # A blank line may straddle the chunks: search from the tail's last byte.
        search_from = max(0, len(self._tail) - 1)
        self._tail += chunk
        tail = self._tail
        start = 0
        while (end := tail.find(_EVENT_END, search_from)) >= 0:
            if self._oversized:
                self.dropped += 1
                self._oversized = False
            else:
                data = _data_of(bytes(tail[start:end]))
                if data is not None:
                    yield data
            start = search_from = end + len(_EVENT_END)
        del tail[:start]
        if len(tail) > self._max:
            # Kept from here on: the last byte, which a blank line may begin with.
            self._oversized = True
            del tail[:-1]


def _data_of(event: bytes) -> bytes | None:
    """An event's data: its `data` fields' values joined by newlines; None when it has none."""
    if event.startswith(b"data: ") and b"\n" not in event:  # the common case, one line
        return event[6:]
    values = []
    for line in event.split(b"\n"):
        if not line.startswith(b"data"):
            continue
        name, colon, value = line.partition(b":")
        if name != b"data":
            continue
        values.append(value[1:] if colon and value.startswith(b" ") else value)
    return b"\n".join(values) if values else None
