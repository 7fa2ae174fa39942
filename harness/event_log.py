"""An append-only, sequence-numbered event log per job, with live subscribers.

The log is a JSON-lines file on the session volume (so replay survives a restart of the harness)
plus the same events in memory for fast replay. Subscribing takes the backlog after a sequence
number and registers a bounded live queue in one step with no await in between, so no event falls
into the gap and none is delivered twice. A subscriber that falls behind is never allowed to block
the job: its queue is dropped and it catches up from the backlog instead.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TextIO

from eventing.job_events import JobEvent


class EventLog:
    def __init__(self, job_id: str, path: Path, *, queue_size: int = 1024) -> None:
        self.job_id = job_id
        self.path = path
        self._events: list[JobEvent] = []
        self._subscribers: set[_Subscriber] = set()
        self._queue_size = queue_size
        self._closed = False
        self._file: TextIO | None = None

    @classmethod
    def load(cls, job_id: str, path: Path) -> EventLog:
        """A finished job's log, read back from the volume (after a restart)."""
        log = cls(job_id, path)
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    log._events.append(JobEvent.model_validate_json(line))
        log._closed = True
        return log

    def reopen(self) -> None:
        """Allow appending to a loaded log again (to record how an interrupted job ended)."""
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def last_seq(self) -> int:
        return self._events[-1].seq if self._events else 0

    def events(self, after: int = 0) -> list[JobEvent]:
        # seq is 1-based without gaps, so it doubles as a list index.
        return self._events[max(after, 0) :]

    def append(self, kind: str, data: dict[str, Any]) -> JobEvent:
        if self._closed:
            raise RuntimeError(f"event log of job {self.job_id} is closed")
        event = JobEvent(
            job_id=self.job_id, seq=self.last_seq + 1, kind=str(kind), data=data, ts=time.time()
        )
        self._write(event)
        self._events.append(event)
        for subscriber in list(self._subscribers):
            subscriber.offer(event)
        return event

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._file is not None:
            self._file.close()
            self._file = None
        for subscriber in list(self._subscribers):
            subscriber.offer(None)

    async def subscribe(self, after: int = 0) -> AsyncIterator[JobEvent]:
        """Every event with seq > `after`: the backlog, then live ones until the log closes."""
        delivered = after
        while True:
            backlog = self.events(delivered)
            if self._closed:
                for event in backlog:
                    yield event
                return
            subscriber = _Subscriber(self._queue_size)
            self._subscribers.add(subscriber)
            try:
                for event in backlog:
                    yield event
                    delivered = event.seq
                async for event in subscriber.drain():
                    if event.seq <= delivered:
                        continue
                    yield event
                    delivered = event.seq
                if not subscriber.overflowed:
                    return
            finally:
                self._subscribers.discard(subscriber)
            # Fell behind: loop round and catch up from the backlog.

    def _write(self, event: JobEvent) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")
        self._file.write(json.dumps(event.model_dump(), separators=(",", ":")) + "\n")
        self._file.flush()


class _Subscriber:
    """A bounded live queue. `None` in the queue marks the end of the log."""

    def __init__(self, size: int) -> None:
        self._queue: asyncio.Queue[JobEvent | None] = asyncio.Queue(maxsize=size + 1)
        self._size = size
        self.overflowed = False

    def offer(self, event: JobEvent | None) -> None:
        if self.overflowed:
            return
        if event is not None and self._queue.qsize() >= self._size:
            # Never block the producer: drop the live feed, the reader replays from the backlog.
            self.overflowed = True
            event = None
        self._queue.put_nowait(event)

    async def drain(self) -> AsyncIterator[JobEvent]:
        while (event := await self._queue.get()) is not None:
            yield event
