"""A job's events as SSE: live from its harness while there is one, then (or instead) from the
stored record. Used by the `prompts` function for stream prompts and `GET /v1/jobs/{id}/events`.

A relay that followed a job from its first event records it when the stream ends
(`functions.job_recording.record_followed`), and one that resumed part-way asks the harness for
the rest of the log: either way the SSE stream ends after the job's row is final, so a caller
that sends the next prompt right after the last event does not find this one still running.
The record the relay writes is the same one the `events` function writes from the harness's
CloudEvents; whichever comes second changes nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from sse_starlette import EventSourceResponse, ServerSentEvent

from eventing.job_events import JobEvent
from functions.context import read, settings
from functions.db.models import (
    ACTIVE_JOB_STATUSES,
    Job,
    JobEventRecord,
    JobStatus,
    TelemetryRequest,
)
from functions.harness_client import decode
from functions.job_log import stored_log
from functions.job_recording import (
    REATTACH_LIMIT,
    answers_about,
    lose_with_harness,
    record_followed,
    record_from_harness,
)
from functions.runtime.base import HarnessEndpoint
from functions.session_runtime import client_for

logger = logging.getLogger(__name__)

EndpointSource = Callable[[], Awaitable[HarnessEndpoint]]


def relay(
    job_id: str, session_id: str, after: int, harness: EndpointSource | None
) -> EventSourceResponse:
    """A job's events after `after` as SSE. A job that ended without a recorded
    ``job_finished`` (its harness was lost) gets one made from its row, so a reader always
    learns how the job ended."""

    async def events() -> AsyncIterator[ServerSentEvent]:
        sent = after
        if harness is not None:
            await _until_started(job_id)
            followed: list[JobEvent] | None = [] if after == 0 else None
            for attempt in range(1, REATTACH_LIMIT + 2):
                try:
                    endpoint = await harness()
                    async with client_for(endpoint) as client:
                        async for message in client.events(job_id, after=sent):
                            yield ServerSentEvent(
                                id=message.id, event=message.event, data=message.data
                            )
                            if message.id and message.id.isascii() and message.id.isdigit():
                                sent = int(message.id)
                            if followed is not None:
                                followed.append(decode(message))
                        if followed is not None:
                            await record_followed(job_id, followed, client)
                    if followed is None:
                        await record_from_harness(job_id, endpoint)
                    return
                except Exception as exc:  # the harness is gone, hung, or only slow to answer
                    reason = str(exc) or type(exc).__name__
                    # Up and answering about the job (a stream broken by a saturated machine, a
                    # proxy's idle cut): follow it again from the last event sent.
                    if attempt <= REATTACH_LIMIT and await answers_about(job_id, session_id):
                        logger.info(
                            "re-attaching to the harness's stream",
                            extra={"job_id": job_id, "after": sent, "reason": reason},
                        )
                        continue
                    logger.info(
                        "relaying from the stored record",
                        extra={"job_id": job_id, "after": sent, "reason": reason},
                    )
                    await lose_with_harness(job_id, session_id)
                    break
        async for event in _follow_stored(job_id, sent):
            yield _sse(event)

    return EventSourceResponse(
        events(),
        ping=settings().heartbeat_s,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        ping_message_factory=lambda: ServerSentEvent(comment="heartbeat"),
    )


async def _until_started(job_id: str) -> None:
    """Return once the job is no longer `queued`. An async prompt's job waits for its turn on
    the harness, which knows nothing of it until then; the reader waits with it (the stream
    sends its heartbeats meanwhile). A job that never starts is failed by the reconciler
    (`job_dispatch.expire_if_stale`), which ends the wait."""
    pause = 0.05
    while await read(_is_queued, job_id):
        await asyncio.sleep(pause)
        pause = min(pause * 2, 1.0)


async def _follow_stored(job_id: str, after: int) -> AsyncIterator[dict[str, Any]]:
    """The job's stored events after `after`, until its ending. A job still running when its
    harness's stream could not be followed (it answers, yet its stream broke more than
    `REATTACH_LIMIT` times) is recorded as it ends, from the harness's CloudEvents or by the
    reconciler: the reader waits for that, with heartbeats, rather than getting a stream that
    ends without saying how the job did."""
    pause = 0.2
    while True:
        events = await read(_stored_events, job_id, after)
        for event in events:
            yield event
            after = event["seq"]
            if event["kind"] == "job_finished":
                return
        if await read(_is_final, job_id):
            return  # no log and no ending to make: nothing more will come
        await asyncio.sleep(pause)
        pause = min(pause * 2, 2.0)


def _is_final(session: Session, job_id: str) -> bool:
    row = session.get(Job, job_id)
    return row is None or row.status not in ACTIVE_JOB_STATUSES


def _is_queued(session: Session, job_id: str) -> bool:
    row = session.get(Job, job_id)
    return row is not None and row.status == JobStatus.QUEUED


def _sse(event: dict[str, Any]) -> ServerSentEvent:
    return ServerSentEvent(
        id=str(event["seq"]), event=event["kind"], data=json.dumps(event, separators=(",", ":"))
    )


def _stored_events(session: Session, job_id: str, after: int) -> list[dict[str, Any]]:
    """From the job's stored log (`vwm.job_events`, whole) when it has one, else from the
    telemetry row's bounded copy (jobs recorded before the log was stored)."""
    if session.scalar(select(JobEventRecord.seq).where(JobEventRecord.job_id == job_id).limit(1)):
        events = stored_log(session, job_id, after)
        has_end = session.scalar(
            select(JobEventRecord.seq).where(
                JobEventRecord.job_id == job_id, JobEventRecord.kind == "job_finished"
            )
        )
        last = events[-1]["seq"] if events else after
        if has_end is None and (ending := _ending_of_unrecorded(session.get(Job, job_id), last)):
            events.append(ending)
        return events
    raw = session.scalar(
        select(TelemetryRequest.event_log).where(TelemetryRequest.job_id == job_id)
    )
    events = []
    for line in (raw or "").splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue  # the bounded record's truncation marker
        if isinstance(event, dict) and event.get("seq", 0) > after:
            events.append(event)
    if raw is None and (ending := _ending_of_unrecorded(session.get(Job, job_id), after)):
        events.append(ending)
    return events


def _ending_of_unrecorded(job: Job | None, after: int) -> dict[str, Any] | None:
    """The `job_finished` of a finished job that has no record (its harness was lost), built
    from its row and numbered after the last event the reader has."""
    if job is None or job.status in ACTIVE_JOB_STATUSES:
        return None
    finished = job.finished_at or datetime.now(UTC)
    return {
        "job_id": job.id,
        "seq": after + 1,
        "kind": "job_finished",
        "data": {
            "status": job.status,
            "summary": job.result,
            "error": job.error,
            "exit_code": None,
            "duration_ms": None,
        },
        "ts": finished.timestamp(),
    }
