"""The outbox: events a publisher has accepted but the sink has not yet, kept durably and in order,
so a sink that is down (or a process that dies) loses nothing. `eventing.relay.Relay` appends to it
and drains it; the harness keeps a `FileOutbox` on its volume, the control plane will keep a
database one behind the same `Outbox` Protocol.

Delivery is at least once: an event whose POST was answered but not yet marked sent when the
process died is sent again, with the same CloudEvents `id`, and the consumer deduplicates on
(`source`, `id`). An event is never lost once `append` returned.

`FileOutbox` layout in its directory (docs/events.md, "Publishing"):

- ``events.<segment>.jsonl``: one structured-mode CloudEvent per line (exactly the JSON body
  ``eventing.codec.to_structured`` gives), appended and synced before `append` returns.
- ``cursor.json``: ``{"segment": n, "offset": bytes}``, the first byte not yet sent (as of the
  last checkpoint); replaced atomically (write a temporary file, fsync, rename, fsync the
  directory).
- ``dead-letters.jsonl``: events the sink refused for good, each with the answer.

What costs what, and why (docs/performance.md): the append's sync is the promise made to the
caller, so it stays; but the cursor only saves repeats, so it is written at most every
`checkpoint_s` seconds (and at compaction and `close`), not after every event: a crash repeats
the events marked sent since the last checkpoint, which at-least-once delivery allows (the
consumer deduplicates on source and id). Pending entries appended by this process are kept in
memory (up to `MEMORY_BYTES`), so the relay's peeks neither re-read nor re-decode them.

A line cut short by a crash during `append` (no newline at the end of the file) was never
acknowledged to its caller: it is cut off when the outbox opens. When everything is sent and the
segment has grown past `compact_bytes`, the next append starts a new segment and the old one is
deleted (compaction); the cursor moves to the new segment before the old file goes, so a crash
in between loses and repeats nothing. One process owns a directory at a time (the harness's
volume is ReadWriteOnce).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import re
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from eventing import codec
from eventing.events import EventError, VwmEvent
from eventing.inputs import InputError

log = logging.getLogger(__name__)

CURSOR_FILE = "cursor.json"
DEAD_LETTER_FILE = "dead-letters.jsonl"
_SEGMENT = re.compile(r"events\.([0-9]{1,18})\.jsonl")
_STRUCTURED = {"content-type": codec.STRUCTURED_CONTENT_TYPE}
# What a dead letter keeps of the sink's answer: enough to see why, bounded.
MAX_ANSWER_CHARS = 4096
# A fully sent segment is replaced by a new one once it is this long: compaction costs a cursor
# write, a deletion and a directory sync, too much to pay each time a burst has been sent.
COMPACT_BYTES = 1 << 20
# The longest a sent event waits for its cursor write; a crash repeats at most that much.
CHECKPOINT_S = 1.0
# Pending events kept in memory beside the file (beyond that, peeks read the file).
MEMORY_BYTES = 8 << 20
# fdatasync skips the inode's times, which nothing here reads; not every platform has it.
_sync_data = getattr(os, "fdatasync", os.fsync)


class OutboxError(InputError):
    """The outbox's files are not what this module writes (edited by hand, another program):
    the outbox refuses to guess. Not retryable; the message names the file and the line. Not
    the caller's input but this machine's state, hence a 500 should an edge ever report one."""

    status = 500
    retryable = False


@dataclass(frozen=True)
class OutboxEntry:
    """One pending event. `position` is opaque to callers: hand the entry back to `mark_sent`
    or `dead_letter` (for the file outbox, the byte offset just past its line)."""

    event: VwmEvent
    position: int


@dataclass(frozen=True)
class DeadLetter:
    """An event the sink refused for good, with its answer: `status` None means no HTTP answer."""

    event: VwmEvent
    status: int | None
    answer: str
    at: datetime


class Outbox(Protocol):
    """Durable, ordered, at-least-once. `append` returns once the event survives a crash;
    `peek` gives the oldest pending entries in append order; `mark_sent` and `dead_letter`
    take the oldest pending entry off (entries leave strictly in order)."""

    async def append(self, event: VwmEvent) -> None: ...

    async def peek(self, limit: int) -> list[OutboxEntry]: ...

    async def mark_sent(self, entry: OutboxEntry) -> None: ...

    async def dead_letter(self, entry: OutboxEntry, *, status: int | None, answer: str) -> None: ...

    async def pending(self) -> int: ...

    async def dead_letters(self) -> list[DeadLetter]: ...


class FileOutbox:
    """An `Outbox` in a directory: append-only JSON lines plus a cursor file. Open with
    `FileOutbox.open(directory)` and `close()` it (which writes the cursor); the blocking file
    work runs in a worker thread, one operation at a time, in the order the calls were made.
    `compact_bytes` and `checkpoint_s` trade disk for syncs (0 and 0: compact whenever all is
    sent, write the cursor after every event)."""

    def __init__(
        self,
        directory: Path,
        segment: int,
        offset: int,
        size: int,
        *,
        compact_bytes: int = COMPACT_BYTES,
        checkpoint_s: float = CHECKPOINT_S,
    ):
        self.directory = directory
        self._segment = segment
        self._offset = offset  # first byte not yet sent, in the current segment
        self._saved_offset = offset  # what cursor.json says
        self._saved_at = time.monotonic()
        self._size = size  # the segment's length: where the next line goes
        self._pending = 0
        self._compact_bytes = compact_bytes
        self._checkpoint_s = checkpoint_s
        self._file: BinaryIO | None = None  # the segment, open for appends
        # The pending entries, oldest first, while they all are here (None: read the file).
        self._memory: deque[OutboxEntry] | None = deque()
        self._memory_bytes = 0
        # Where the pending lines end, from the head on, as the last file read found them: so
        # that checking an entry is the oldest costs no read.
        self._ends: deque[int] = deque()
        self._lock = asyncio.Lock()  # FIFO: appends keep the order of the calls

    @classmethod
    async def open(
        cls,
        directory: Path,
        *,
        compact_bytes: int = COMPACT_BYTES,
        checkpoint_s: float = CHECKPOINT_S,
    ) -> FileOutbox:
        return await asyncio.to_thread(cls._open, Path(directory), compact_bytes, checkpoint_s)

    @classmethod
    def _open(cls, directory: Path, compact_bytes: int, checkpoint_s: float) -> FileOutbox:
        directory.mkdir(parents=True, exist_ok=True)
        segment, offset = _read_cursor(directory)
        for path in directory.iterdir():
            match = _SEGMENT.fullmatch(path.name)
            if match and int(match[1]) != segment:
                path.unlink()  # an older, fully sent segment whose deletion a crash cut short
            elif path.name == f"{CURSOR_FILE}.tmp":
                path.unlink()  # a cursor write a crash cut short: the old cursor stands
        path = directory / _segment_name(segment)
        size = _cut_torn_line(path)
        if offset > size:
            raise OutboxError(
                "outbox_corrupt",
                f"{directory / CURSOR_FILE} points past the end of {path.name}: the files were "
                "changed by something else; move the directory aside to start a new outbox",
                path=str(directory),
            )
        outbox = cls(
            directory, segment, offset, size, compact_bytes=compact_bytes, checkpoint_s=checkpoint_s
        )
        pending = outbox._read(offset, None)
        outbox._pending = len(pending)
        outbox._memory = None if pending else deque()
        return outbox

    async def append(self, event: VwmEvent) -> None:
        _, body = codec.to_structured(event)
        async with self._lock:
            await asyncio.to_thread(self._append, body + b"\n")
            self._remember(OutboxEntry(event, self._size), len(body) + 1)

    async def peek(self, limit: int) -> list[OutboxEntry]:
        async with self._lock:
            if self._memory is not None:
                return list(itertools.islice(self._memory, limit))
            return await asyncio.to_thread(self._read, self._offset, limit)

    async def mark_sent(self, entry: OutboxEntry) -> None:
        async with self._lock:
            self._check_head(entry)
            if self._checkpoint_due():
                await asyncio.to_thread(self._write_cursor, entry.position)
            self._forget_head(entry.position)

    async def dead_letter(self, entry: OutboxEntry, *, status: int | None, answer: str) -> None:
        record = {
            "at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "status": status,
            "answer": answer[:MAX_ANSWER_CHARS],
            "event": json.loads(codec.to_structured(entry.event)[1]),
        }
        line = json.dumps(record, ensure_ascii=False).encode() + b"\n"
        async with self._lock:
            self._check_head(entry)
            # Recorded before the cursor moves: a crash in between keeps it twice, never zero.
            await asyncio.to_thread(_append_synced, self.directory / DEAD_LETTER_FILE, line)
            if self._checkpoint_due():
                await asyncio.to_thread(self._write_cursor, entry.position)
            self._forget_head(entry.position)

    async def pending(self) -> int:
        return self._pending

    async def dead_letters(self) -> list[DeadLetter]:
        """Every dead letter kept, oldest first (for operators and tests)."""
        return await asyncio.to_thread(read_dead_letters, self.directory)

    async def close(self) -> None:
        """Write the cursor (so a restart repeats nothing) and close the segment. The outbox
        can still be used after: the next append opens the segment again."""
        async with self._lock:
            await asyncio.to_thread(self._close)

    # -- the in-memory side ---------------------------------------------------------------------

    def _checkpoint_due(self) -> bool:
        return time.monotonic() - self._saved_at >= self._checkpoint_s

    def _remember(self, entry: OutboxEntry, length: int) -> None:
        if self._memory is None:
            return
        if self._memory_bytes + length > MEMORY_BYTES:  # a long outage: the file holds them
            self._memory, self._memory_bytes = None, 0
            return
        self._memory.append(entry)
        self._memory_bytes += length

    def _check_head(self, entry: OutboxEntry) -> None:
        if self._memory is not None:
            head_end = self._memory[0].position if self._memory else self._offset
        else:
            head_end = self._ends[0] if self._ends else self._offset + self._head_length()
        if entry.position != head_end or head_end == self._offset:
            raise ValueError("that entry is not the oldest pending one: peek again")

    def _forget_head(self, position: int) -> None:
        length = position - self._offset
        self._offset = position
        self._pending -= 1
        if self._ends:
            self._ends.popleft()
        if self._memory is not None:
            self._memory.popleft()
            self._memory_bytes -= length
        elif self._pending == 0:  # nothing pending: from here on memory holds all of it again
            self._memory, self._memory_bytes = deque(), 0

    # -- blocking parts, run in a worker thread under the lock ----------------------------------

    def _append(self, line: bytes) -> None:
        if self._pending == 0 and self._size > 0 and self._compact_bytes <= self._size:
            self._compact()
        if self._file is None:
            path = self.directory / _segment_name(self._segment)
            created = not path.exists()
            self._file = path.open("ab")
            if created:  # the new name must survive a crash too
                _fsync_directory(self.directory)
        self._file.write(line)
        self._file.flush()
        _sync_data(self._file.fileno())
        self._size += len(line)
        self._pending += 1

    def _compact(self) -> None:
        """Everything is sent: move the cursor to a new, empty segment, then delete the old one."""
        self._close_file()
        old = self.directory / _segment_name(self._segment)
        self._segment, self._offset, self._size = self._segment + 1, 0, 0
        self._write_cursor(0)
        self._ends.clear()
        old.unlink(missing_ok=True)
        _fsync_directory(self.directory)

    def _write_cursor(self, offset: int) -> None:
        _write_cursor(self.directory, self._segment, offset)
        self._saved_offset, self._saved_at = offset, time.monotonic()

    def _close(self) -> None:
        if self._saved_offset != self._offset:
            self._write_cursor(self._offset)
        self._close_file()

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _head_length(self) -> int:
        """The length of the oldest pending line (0 if none): entries leave strictly in order."""
        if self._offset >= self._size:
            return 0
        with (self.directory / _segment_name(self._segment)).open("rb") as file:
            file.seek(self._offset)
            return len(file.readline())

    def _read(self, offset: int, limit: int | None) -> list[OutboxEntry]:
        path = self.directory / _segment_name(self._segment)
        entries: list[OutboxEntry] = []
        if not path.exists():
            return entries
        with path.open("rb") as file:
            file.seek(offset)
            position = offset
            while limit is None or len(entries) < limit:
                line = file.readline()
                if not line.endswith(b"\n"):  # end of file (a torn line was cut at open)
                    break
                position += len(line)
                entries.append(OutboxEntry(_decode_line(path, position, line), position))
        if offset == self._offset:
            self._ends = deque(entry.position for entry in entries)
        return entries


def read_dead_letters(directory: Path) -> list[DeadLetter]:
    path = Path(directory) / DEAD_LETTER_FILE
    if not path.exists():
        return []
    letters = []
    for line in path.read_bytes().splitlines():
        if not line.strip():
            continue
        with contextlib.suppress(ValueError, KeyError, TypeError):  # a torn last record
            record = json.loads(line)
            event = codec.from_http(_STRUCTURED, json.dumps(record["event"]).encode())
            at = datetime.fromisoformat(record["at"])
            letters.append(DeadLetter(event, record["status"], record["answer"], at))
    return letters


def _segment_name(segment: int) -> str:
    return f"events.{segment}.jsonl"


def _decode_line(path: Path, position: int, line: bytes) -> VwmEvent:
    try:
        return codec.from_http(_STRUCTURED, line)
    except EventError as exc:
        raise OutboxError(
            "outbox_corrupt",
            f"{path} holds a line that is not a VWM event (ending at byte {position}): "
            f"{exc.message}; move the directory aside to start a new outbox",
            path=str(path),
            offset=position,
        ) from None


def _read_cursor(directory: Path) -> tuple[int, int]:
    path = directory / CURSOR_FILE
    if not path.exists():
        return 0, 0
    try:
        raw: Any = json.loads(path.read_bytes())
        segment, offset = raw["segment"], raw["offset"]
        if not all(type(value) is int and value >= 0 for value in (segment, offset)):
            raise ValueError("segment and offset must be whole numbers")
    except (ValueError, KeyError, TypeError) as exc:
        raise OutboxError(
            "outbox_corrupt",
            f"{path} is not an outbox cursor ({exc}); move the directory aside to start anew",
            path=str(path),
        ) from None
    return segment, offset


def _write_cursor(directory: Path, segment: int, offset: int) -> None:
    temporary = directory / f"{CURSOR_FILE}.tmp"
    with temporary.open("wb") as file:
        file.write(json.dumps({"segment": segment, "offset": offset}).encode())
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, directory / CURSOR_FILE)
    _fsync_directory(directory)


def _append_synced(path: Path, line: bytes) -> None:
    created = not path.exists()
    with path.open("ab") as file:
        file.write(line)
        file.flush()
        os.fsync(file.fileno())
    if created:  # the new name must survive a crash too
        _fsync_directory(path.parent)


def _cut_torn_line(path: Path) -> int:
    """The segment's size after cutting a last line that has no newline (a crash mid-append)."""
    if not path.exists():
        return 0
    data = path.read_bytes()
    keep = data.rfind(b"\n") + 1
    if keep < len(data):
        log.warning(
            "outbox: cut a torn last line (a crash during an append)",
            extra={"path": str(path), "bytes": len(data) - keep},
        )
        with path.open("r+b") as file:
            file.truncate(keep)
            os.fsync(file.fileno())
    return keep


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
