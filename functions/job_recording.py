"""Following a job to its end: its recorder, and the relay of its events as SSE.

Used by the `prompts` function. Every job gets a recorder: a task that follows the harness's
event stream to the end, then writes the job's result and its telemetry row. A harness that falls
silent (no event, no heartbeat within `stream_idle_s`) fails the job and is replaced. The relay
streams a job's events live from its harness while there is one, then (or instead) from the
stored record: the job's log in `vwm.job_events` when the `events` function wrote one, else the
telemetry row's bounded copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from sse_starlette import EventSourceResponse, ServerSentEvent

from functions.context import db, settings
from functions.db.models import (
    ACTIVE_JOB_STATUSES,
    Job,
    JobEventRecord,
    JobStatus,
    TelemetryRequest,
)
from functions.db.repositories import Jobs
from functions.db.transitions import transition_job
from functions.harness_client import HarnessClient, HarnessRefused, HarnessUnavailable, decode
from functions.job_log import stored_log
from functions.runtime.base import HarnessEndpoint
from functions.session_runtime import client_for, recover
from functions.telemetry_writer import record_job

logger = logging.getLogger(__name__)

# Recorders of the jobs this process started, by job id: in-process work of the embedded control
# plane, until jobs are driven by events.
_recorders: dict[str, asyncio.Task[None]] = {}


async def finishing(endpoint: HarnessEndpoint, job_id: str | None) -> bool:
    """True once the job's record is written, if it had already ended on the harness."""
    recorder = _recorders.get(job_id or "")
    if recorder is None:
        return False
    try:
        async with client_for(endpoint) as harness:
            if (await harness.job(str(job_id)))["status"] == "running":
                return False
    except HarnessUnavailable:
        return False  # its recorder notices a hung harness and fails the job
    await asyncio.shield(recorder)
    return True


def start_recorder(
    job_id: str, session_id: str, endpoint: HarnessEndpoint, instructions_version: int
) -> None:
    task = asyncio.create_task(_record(job_id, session_id, endpoint, instructions_version))
    _recorders[job_id] = task
    task.add_done_callback(lambda _: _recorders.pop(job_id, None))


async def wait_recorded(job_id: str, bound_s: float | None = None) -> None:
    """Until the job's recorder is done, or `bound_s` passed."""
    if (task := _recorders.get(job_id)) is not None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), bound_s)


async def _record(
    job_id: str, session_id: str, endpoint: HarnessEndpoint, instructions_version: int
) -> None:
    """Follow the harness's events to `job_finished`, then store the result and telemetry. A
    harness that falls silent (no event, no heartbeat within the bound) fails the job and is
    replaced: its CLI may still run, and nobody would ever record what it does."""
    events: list[dict[str, Any]] = []
    try:
        async with client_for(endpoint) as harness:
            async for message in harness.events(job_id):
                events.append(decode(message))
            stdout = await _raw_output(harness, job_id)
        await db(
            record_job, job_id, events, stdout, instructions_version, settings().raw_output_limit
        )
    except HarnessUnavailable as exc:
        logger.warning("the job's harness stopped answering", extra={"job_id": job_id})
        lost = {
            "code": "harness_unavailable",
            "message": f"{exc.message.removesuffix(', try again')}; the job is lost, send the "
            "prompt again (the CLI session resumes)",
        }
        await db(_fail_unrecorded, job_id, lost)
        await recover(session_id)
    except Exception as exc:  # the job row must not stay `running` forever
        logger.exception("recording the job failed", extra={"job_id": job_id})
        lost = {"code": "harness_lost", "message": f"the job's harness was lost: {exc}"}
        await db(_fail_unrecorded, job_id, lost)


async def _raw_output(harness: HarnessClient, job_id: str) -> str:
    """The CLI's literal stdout as the harness kept it ("" if it kept none, or the harness went
    quiet after the job ended: the events are what counts)."""
    try:
        data = await harness.files.read(f".vwm/jobs/{job_id}.stdout")
    except HarnessRefused as refused:
        if refused.code == "not_found":
            return ""
        raise
    except HarnessUnavailable:
        logger.warning("could not read the job's raw output", extra={"job_id": job_id})
        return ""
    return data.decode("utf-8", errors="replace")


def _fail_unrecorded(session: Session, job_id: str, error: dict[str, Any]) -> None:
    row = Jobs(session).get(job_id)
    if row.status in ACTIVE_JOB_STATUSES:
        transition_job(session, row, JobStatus.FAILED, error=error)


EndpointSource = Callable[[], Awaitable[HarnessEndpoint]]


def relay(job_id: str, after: int, harness: EndpointSource | None) -> EventSourceResponse:
    """A job's events after `after` as SSE: live from its harness while there is one, then (or
    instead) from the stored record, continuing after the last event already sent. A job that
    ended without a recorded `job_finished` (its harness was lost) gets one made from its row,
    so a reader always learns how the job ended."""

    async def events() -> AsyncIterator[ServerSentEvent]:
        sent = after
        if harness is not None:
            try:
                async with client_for(await harness()) as client:
                    async for message in client.events(job_id, after=after):
                        yield ServerSentEvent(id=message.id, event=message.event, data=message.data)
                        if message.id and message.id.isascii() and message.id.isdigit():
                            sent = int(message.id)
                # The stream ends once the job is recorded: a caller that sends the next prompt
                # right after the last event must not find this one still running.
                await wait_recorded(job_id)
                return
            except Exception:  # the harness is gone: go on from the stored record
                logger.info("relaying from the stored record", extra={"job_id": job_id})
                # Its recorder sees the same loss and fails the job; let it finish first.
                await wait_recorded(job_id, settings().harness.stream_idle_s)
        for event in await db(_stored_events, job_id, sent):
            yield _sse(event)

    return EventSourceResponse(
        events(),
        ping=settings().heartbeat_s,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        ping_message_factory=lambda: ServerSentEvent(comment="heartbeat"),
    )


def _sse(event: dict[str, Any]) -> ServerSentEvent:
    return ServerSentEvent(
        id=str(event["seq"]), event=event["kind"], data=json.dumps(event, separators=(",", ":"))
    )


def _stored_events(session: Session, job_id: str, after: int) -> list[dict[str, Any]]:
    """From the job's stored log (`vwm.job_events`, written by the `events` function, whole)
    when it has one, else from the telemetry row's bounded copy."""
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
