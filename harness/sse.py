"""Job events as Server-Sent Events: ``id`` is the sequence number, ``event`` the kind.

A client that drops reconnects with ``Last-Event-ID`` (or ``?after=N``) and gets exactly the
events it missed. Heartbeats are SSE comments, so they never disturb the numbering.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import Request

from eventing.inputs import ascii_uint
from harness.event_log import EventLog

NO_BUFFERING = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def resume_point(request: Request) -> int:
    """`Last-Event-ID`, else `?after=`, else 0; ASCII digits only (`str.isdigit` would take
    '٣' or '²'), else 400 `invalid_parameter`."""
    if raw := request.headers.get("last-event-id"):
        return ascii_uint(raw, "Last-Event-ID")
    if raw := request.query_params.get("after"):
        return ascii_uint(raw, "after")
    return 0


def event_stream(log: EventLog, after: int, heartbeat_s: float) -> EventSourceResponse:
    async def events() -> AsyncIterator[ServerSentEvent]:
        async for event in log.subscribe(after):
            yield ServerSentEvent(
                id=str(event.seq),
                event=event.kind,
                data=json.dumps(event.model_dump(), separators=(",", ":")),
            )

    return EventSourceResponse(
        events(),
        ping=heartbeat_s,
        headers=NO_BUFFERING,
        ping_message_factory=lambda: ServerSentEvent(comment="heartbeat"),
    )
