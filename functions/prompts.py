"""The `prompts` function: run a prompt on a session (sync, stream, async) and read jobs.

An async prompt is a prompt request like any other service's: its job is queued and a
`dev.vwm.prompt.requested` published in one transaction (`functions.prompt_requests`), and the
answer is 202 at once; the broker delivers the request to the session's harness, which runs it
when the session is free (`functions.prompt_delivery`).

A sync or stream prompt queues a job and starts it on the session's harness at once
(`functions.job_dispatch`, bounded: a job that cannot be started in time ends `failed` with
`harness_unavailable` and the caller gets 503; a busy session is 409 `session_busy`). Sync
follows the job to its end and records it on the way (answering without waiting for the
broker); stream relays the same events as SSE and records at the end (a client that drops
loses nothing: it reconnects to `GET /v1/jobs/{id}/events` with `Last-Event-ID`).

No job's record depends on its caller: the harness publishes the job's events, which the
`events` function records, and the reconciler asks the harness about any job they did not
record (`functions.job_recording`).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Literal

from pydantic import ConfigDict, Field
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from eventing.events import (
    CONTROL_PLANE_SOURCE,
    PromptRequested,
    new_event_id,
    prompt_job_id,
    utc_now,
)
from eventing.lazy_models import LazyModel
from functions.api import Endpoint
from functions.context import db, read, settings
from functions.db.errors import ConflictError, SessionBusy
from functions.db.models import ACTIVE_JOB_STATUSES, Job, JobStatus, WorkerSession
from functions.db.repositories import Jobs, Sessions
from functions.db.transitions import PromptRequest, StartedJob, start_job, transition_job
from functions.harness_client import HarnessCallError, HarnessUnavailable
from functions.http import parse_body, parse_query
from functions.job_calls import ENDPOINTS as CALL_ENDPOINTS
from functions.job_dispatch import JobStart, dispatch, expire_if_stale
from functions.job_recording import follow_to_end, lose_with_harness, record_from_harness
from functions.job_relay import relay
from functions.params import RESUME_HEADERS, ResumeQuery, resume_point
from functions.prompt_requests import publish
from functions.runtime.base import HarnessEndpoint
from functions.session_runtime import client_for, reach
from functions.session_sync import wanted

logger = logging.getLogger(__name__)


class PromptIn(LazyModel):
    model_config = ConfigDict(extra="forbid")
    session_id: str = Field(min_length=1, max_length=64)
    prompt: str = Field(min_length=1, max_length=512_000)
    mode: Literal["sync", "stream", "async"] = "sync"
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)
    timeout_s: int | None = Field(default=None, gt=0, le=86_400)


class JobOut(LazyModel):
    id: str
    session_id: str
    status: JobStatus
    mode: str
    prompt: str
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class JobList(LazyModel):
    items: list[JobOut]
    next_cursor: str | None


class JobQuery(LazyModel):
    model_config = ConfigDict(extra="forbid")
    limit: int = Field(default=50, ge=1, le=500)
    cursor: str | None = Field(default=None, max_length=500)


def job_out(row: Job) -> dict[str, Any]:
    return JobOut.model_validate(
        dict(
            id=row.id,
            session_id=row.session_id,
            status=row.status,
            mode=row.mode,  # type: ignore[arg-type]
            prompt=row.prompt,
            result=row.result,
            error=row.error,
            created_at=row.created_at,
            started_at=row.started_at,
            finished_at=row.finished_at,
        )
    ).model_dump(mode="json")


def _get_job(session: Session, job_id: str) -> Job:
    return Jobs(session).get(job_id)


async def create_prompt(request: Request) -> Response:
    body = await parse_body(request, PromptIn, settings().max_request_bytes)
    if body.mode == "async":
        return await _request_prompt(body)
    view, endpoint = await reach(body.session_id)
    want = await read(wanted, view)

    def queue(session: Session) -> StartedJob:
        started = _start(session, body)
        if started.created:
            # Before dispatch: whoever records the job (its events may come first) reads them.
            started.job.instructions_version = want.instructions_version
            started.job.worker_revision = want.worker_revision
        return started

    try:
        started = await db(queue)
    except SessionBusy as busy:
        # The previous job may have ended on the harness a moment ago while its record is still
        # on its way: then record it from the harness and go on instead of refusing. A job left
        # queued by a request that died mid-dispatch can never start any more: it is failed.
        active = busy.details.get("active_job_id")
        if not (await db(expire_if_stale, active) or await _ended_on(endpoint, active)):
            raise
        started = await db(queue)
    job = started.job
    if started.created:
        start = JobStart(job_id=job.id, prompt=body.prompt, timeout_s=body.timeout_s)
        endpoint = await dispatch(view, endpoint, start, want)
        job = await db(_mark_dispatched, job.id)
    if body.mode == "stream":
        known = endpoint  # reached above: no second lookup for the stream

        async def harness() -> HarnessEndpoint:
            return known

        return relay(job.id, body.session_id, 0, harness=harness)
    await follow_to_end(job.id, body.session_id, endpoint)
    return JSONResponse(await db(lambda s: job_out(_get_job(s, job.id))))


async def _request_prompt(body: PromptIn) -> Response:
    """Async: the job queued and its prompt request published, in one transaction; 202 (200
    for an idempotency key seen before, with that job as it is now)."""
    event_id = new_event_id()
    request = PromptRequest(prompt_job_id(CONTROL_PLANE_SOURCE, event_id), event_id)

    def queue(session: Session) -> tuple[dict[str, Any], bool]:
        started = _start(session, body, request)
        if started.created:  # so the session exists, and its id fits the event's alphabet
            data = PromptRequested(
                session_id=body.session_id,
                prompt=body.prompt,
                timeout_s=float(body.timeout_s) if body.timeout_s else None,
                requested_at=utc_now(),
            )
            publish(session, started.job, data)
        return job_out(started.job), started.created

    job, created = await db(queue)
    return JSONResponse(job, status_code=202 if created else 200)


def _start(session: Session, body: PromptIn, request: PromptRequest | None = None) -> StartedJob:
    return start_job(
        session,
        body.session_id,
        prompt=body.prompt,
        mode=body.mode,
        idempotency_key=body.idempotency_key,
        timeout_s=body.timeout_s,
        request=request,
    )


def _mark_dispatched(session: Session, job_id: str) -> Job:
    """The harness took the job: queued → running, unless its `job.started` event (or its
    end) was recorded first."""
    row = _get_job(session, job_id)
    if row.status == JobStatus.QUEUED:
        row = transition_job(session, row, JobStatus.RUNNING, harness_job_id=job_id)
    else:
        row.harness_job_id = job_id
    return row


async def _ended_on(endpoint: HarnessEndpoint, job_id: str | None) -> bool:
    """True once the job is recorded, if it had already ended on its harness."""
    if not job_id:
        return False
    try:
        return await record_from_harness(job_id, endpoint)
    except HarnessCallError:
        return False  # the reconciler finds out what became of it


async def get_job(request: Request) -> Response:
    job_id = request.path_params["job_id"]

    def read(session: Session) -> dict[str, Any]:
        expire_if_stale(session, job_id)  # a job left queued by a dead request reads `failed`
        return job_out(_get_job(session, job_id))

    return JSONResponse(await db(read))


async def list_jobs(request: Request) -> Response:
    """A session's jobs, newest first (the session must exist, ended or not)."""
    session_id = request.path_params["session_id"]
    query = parse_query(request, JobQuery)

    def page(session: Session) -> dict[str, Any]:
        Sessions(session).get(session_id)  # 404 for a session that does not exist
        found = Jobs(session).page(session_id, limit=query.limit, cursor=query.cursor)
        return {"items": [job_out(row) for row in found.items], "next_cursor": found.next_cursor}

    return JSONResponse(await read(page))


async def job_events(request: Request) -> Response:
    job_id = request.path_params["job_id"]
    after = resume_point(request)  # ASCII digits only, else 400 invalid_parameter
    job, session_status = await read(lambda s: _job_and_session_status(s, job_id))
    if job.status in ACTIVE_JOB_STATUSES or session_status == "ready":
        return relay(job_id, job.session_id, after, harness=lambda: _endpoint_of(job.session_id))
    return relay(job_id, job.session_id, after, harness=None)


def _job_and_session_status(session: Session, job_id: str) -> tuple[Job, str | None]:
    job = _get_job(session, job_id)
    row = session.get(WorkerSession, job.session_id)
    return job, row.status if row is not None else None


async def _endpoint_of(session_id: str) -> HarnessEndpoint:
    _, endpoint = await reach(session_id)
    return endpoint


async def cancel_job(request: Request) -> Response:
    job_id = request.path_params["job_id"]
    job = await db(lambda s: _get_job(s, job_id))
    if job.status in ACTIVE_JOB_STATUSES:
        try:
            _, endpoint = await reach(job.session_id)
        except ConflictError:
            endpoint = None  # its session is ending or ended: the job ends with it
        if endpoint is not None:
            try:
                async with client_for(endpoint) as harness:
                    await harness.cancel(job_id)
            except HarnessUnavailable:
                # A hung harness cancels nothing; replacing it stops the job, which then fails.
                # Only if the harness was not replaced does the caller retry.
                if not await lose_with_harness(job_id, job.session_id):
                    raise
            else:
                await _ended_on(endpoint, job_id)
    return JSONResponse(await db(lambda s: job_out(_get_job(s, job_id))))


TAGS = ("prompts",)
# Served by the `sessions` function, whose paths it shares (a path prefix routes to one function).
SESSION_JOBS = Endpoint(
    "GET",
    "/v1/sessions/{session_id}/jobs",
    list_jobs,
    "A session's jobs, newest first",
    query=JobQuery,
    response=JobList,
    other_statuses=(400, 404),
    tags=TAGS,
)
ENDPOINTS = [
    Endpoint(
        "POST",
        "/v1/prompts",
        create_prompt,
        "Run a prompt on a session: sync (JSON), stream (SSE) or async (202)",
        body=PromptIn,
        response=JobOut,
        other_statuses=(202, 404, 409, 502, 503),
        tags=TAGS,
    ),
    Endpoint("GET", "/v1/jobs/{job_id}", get_job, "Get a job", response=JobOut, tags=TAGS),
    Endpoint(
        "GET",
        "/v1/jobs/{job_id}/events",
        job_events,
        "A job's events as SSE; resumes after Last-Event-ID",
        query=ResumeQuery,
        headers=RESUME_HEADERS,
        sse=True,
        other_statuses=(400,),
        tags=TAGS,
    ),
    Endpoint(
        "POST",
        "/v1/jobs/{job_id}/cancel",
        cancel_job,
        "Cancel a running job",
        response=JobOut,
        other_statuses=(404, 503),
        tags=TAGS,
    ),
]
ENDPOINTS += CALL_ENDPOINTS  # a job's metered model calls: functions/job_calls.py
