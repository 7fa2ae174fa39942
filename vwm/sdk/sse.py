"""Reading job events over Server-Sent Events, and following a job's stream across dropped
connections.

`parse_sse` turns the lines of an ``text/event-stream`` body into `Event`s (heartbeat comments
skipped, an event cut off by a drop never emitted). `follow` yields a job's events from a first
request and, when the connection drops before ``job_finished``, reconnects to
``GET /v1/jobs/{id}/events`` with ``Last-Event-ID`` so nothing is lost or repeated.
Used by `VWSession.stream` and `Job.events`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from eventing.sse import parse_lines
from vwm.errors import (
    ProtocolError,
    ServerError,
    StreamInterruptedError,
    UnreachableError,
    VWMError,
    error_for,
)
from vwm.sdk.models import Event

if TYPE_CHECKING:
    from vwm.sdk.client import Client

StreamOpener = Callable[[], AbstractContextManager[httpx.Response]]


@dataclass(frozen=True)
class StreamSettings:
    """How event streams are read and resumed."""

    idle_timeout_s: float = 45.0
    """No byte for this long (the server sends a heartbeat every 15 s) counts as a dropped stream."""
    max_reconnects: int = 5
    """Reconnection attempts in a row that bring no new event before giving up."""
    backoff_s: float = 0.25
    """Wait before the first reconnection; it doubles with every failed attempt, up to 8 s."""


def parse_sse(lines: Iterable[str]) -> Iterator[Event]:
    """The events in the lines of an SSE body. Only a complete event (ended by a blank line) counts."""
    for frame in parse_lines(lines):
        yield decode_event(frame.id, frame.event, frame.data)


def decode_event(sse_id: str | None, name: str, data: str) -> Event:
    """One event from its SSE fields; the payload is ``{job_id, seq, kind, data, ts}``."""
    try:
        payload: Any = json.loads(data)
    except ValueError as exc:
        raise ProtocolError(
            f"an event's data is not JSON: {data[:200]!r}", details={"id": sse_id, "event": name}
        ) from exc
    if not isinstance(payload, dict):
        raise ProtocolError(f"an event's data is not a JSON object: {data[:200]!r}")
    if "seq" not in payload and isinstance(payload.get("error"), dict):
        error = payload["error"]
        raise error_for(
            502,
            error.get("code"),
            str(error.get("message", "the stream failed")),
            error.get("details"),
        )
    raw_seq = payload.get("seq", sse_id)
    try:
        seq = int(raw_seq)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"an event has no sequence number: {data[:200]!r}") from exc
    inner = payload.get("data")
    return Event(
        seq=seq,
        kind=str(payload.get("kind") or name),
        data=inner if isinstance(inner, dict) else {},
        job_id=payload.get("job_id"),
        ts=payload.get("ts"),
    )


def follow(
    client: Client,
    *,
    job_id: str | None = None,
    after: int = 0,
    start: StreamOpener | None = None,
) -> Iterator[Event]:
    """A job's events after ``after``, up to and including ``job_finished``.

    ``start`` opens the first stream (the ``POST /v1/prompts`` of stream mode); without it the
    stream starts at ``GET /v1/jobs/{job_id}/events``. The job id is learnt from the first event.
    """
    settings = client.stream_settings
    last = after
    failures = 0

    def reopen() -> AbstractContextManager[httpx.Response]:
        return client.open_stream(
            "GET", f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": str(last)}
        )

    opener = start or reopen
    while True:
        problem: Exception | None = None
        try:
            with opener() as response:
                for event in parse_sse(response.iter_lines()):
                    if event.seq <= last:
                        continue  # a replay overlapping what we already have
                    job_id = job_id or event.job_id
                    last, failures = event.seq, 0
                    yield event
                    if event.is_final:
                        return
        except (httpx.TransportError, UnreachableError, ServerError) as exc:
            problem = exc
        if job_id is None:
            if isinstance(problem, VWMError):
                raise problem
            raise StreamInterruptedError(
                "the event stream ended before its first event, so the job is unknown; "
                "list the session's jobs or retry with the same idempotency key"
            ) from problem
        failures += 1
        if failures > settings.max_reconnects:
            raise StreamInterruptedError(
                f"lost the event stream of job {job_id} after event {last} ({problem or 'closed early'}); "
                f"resume it with `vwm job events {job_id} --after {last}`",
                details={"job_id": job_id, "last_seq": last},
            ) from problem
        time.sleep(min(settings.backoff_s * 2 ** (failures - 1), 8.0))
        opener = reopen
