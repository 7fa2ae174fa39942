"""The `prompts` function: run a prompt on a session (sync, stream, async) and read jobs.

Every job gets a recorder: a task that follows the harness's event stream to the end, then writes
the job's result and its telemetry row. Sync answers when the recorder is done; stream relays the
same harness events as SSE while the recorder runs beside it (a client that drops loses nothing:
it reconnects to `GET /v1/jobs/{id}/events` with `Last-Event-ID`); async answers 202 at once.

Nothing here waits on a harness without a bound (`HarnessCallSettings`): a job that cannot be
started in time ends `failed` with `harness_unavailable` (the caller gets 503 and retries), a job
whose harness falls silent while it runs ends the same way, and the hung harness is replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from functions.api import Endpoint
from functions.context import db, settings
from functions.db.errors import DbError, SessionBusy
from functions.db.models import ACTIVE_JOB_STATUSES, Job, JobStatus, WorkerSession
from functions.db.repositories import Jobs
from functions.db.transitions import StartedJob, start_job, transition_job
from functions.harness_client import (
    HarnessCallError,
    HarnessClient,
    HarnessRefused,
    HarnessUnavailable,
    decode,
)
from functions.http import parse_body
from functions.params import RESUME_HEADERS, ResumeQuery, resume_point
from functions.runtime.base import HarnessEndpoint
from functions.runtime.errors import RuntimeBackendError
from functions.session_runtime import (
    SessionView,
    applied_instructions,
    bootstrap_body,
    client_for,
    global_instructions,
    reach,
    recover,
)
from functions.telemetry_writer import record_job

logger = logging.getLogger(__name__)

_recorders: dict[str, asyncio.Task[None]] = {}


class PromptIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    session_id: str = Field(min_length=1, max_length=64)
    prompt: str = Field(min_length=1, max_length=512_000)
    mode: Literal["sync", "stream", "async"] = "sync"
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)
    timeout_s: int | None = Field(default=None, gt=0, le=86_400)


class JobOut(BaseModel):
    id: str
    session_id: str
    status: Literal["queued", "running", "succeeded", "failed", "cancelled", "timeout"]
    mode: str
    prompt: str
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


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
    view, endpoint = await reach(body.session_id)

    def queue(session: Session) -> StartedJob:
        return start_job(
            session,
            body.session_id,
            prompt=body.prompt,
            mode=body.mode,
            idempotency_key=body.idempotency_key,
            timeout_s=body.timeout_s,
        )

    try:
        started = await db(queue)
    except SessionBusy as busy:
        # The previous job may have ended on the harness a moment ago while its record is still
        # being written: then wait for the record instead of refusing. A job left queued by a
        # request that died mid-dispatch can never start any more: it is failed, not waited for.
        active = busy.details.get("active_job_id")
        if not (await db(_expire_if_stale, active) or await _finishing(endpoint, active)):
            raise
        started = await db(queue)
    job = started.job
    if started.created:
        instructions, version = await db(global_instructions)
        endpoint = await _dispatch(view, endpoint, body, job.id, instructions, version)
        job = await db(
            lambda s: transition_job(
                s, _get_job(s, job.id), JobStatus.RUNNING, harness_job_id=job.id
            )
        )
        _start_recorder(job.id, body.session_id, endpoint, version)
    if body.mode == "async":
        return JSONResponse(job_out(job), status_code=202 if started.created else 200)
    if body.mode == "stream":
        known = endpoint  # reached above: no second lookup for the stream

        async def harness() -> HarnessEndpoint:
            return known

        return _relay(job.id, 0, harness=harness)
    await _wait_recorded(job.id)
    return JSONResponse(await db(lambda s: job_out(_get_job(s, job.id))))


async def _dispatch(
    view: SessionView,
    endpoint: HarnessEndpoint,
    body: PromptIn,
    job_id: str,
    instructions: str,
    version: int,
) -> HarnessEndpoint:
    """Start the queued job on the harness; returns where it runs. However that fails (refused,
    no answer in time, this request cancelled), the job row ends `failed`, never `queued`, and a
    job that never started gives its idempotency key back (the same key runs it anew).

    A harness that refused the connection or dropped it at once (gone a moment ago) is
    relaunched and asked once more: nothing ran. One that did not answer in time is replaced and
    the caller gets `harness_unavailable` without a retry: the call may have reached a harness
    that then hung, and its `not_after` makes sure it never runs late."""
    try:
        try:
            await _start_checked(view, endpoint, body, job_id, instructions, version)
        except HarnessUnavailable as exc:
            if exc.timed_out:
                raise
            try:
                view, endpoint = await reach(view.session.id, probe=True)
            except RuntimeBackendError:
                raise exc from None
            await _start_checked(view, endpoint, body, job_id, instructions, version)
    except HarnessCallError as exc:
        await db(_fail_queued, job_id, {"code": exc.code, "message": exc.message})
        if isinstance(exc, HarnessUnavailable):
            await recover(view.session.id)
            if exc.timed_out:
                await _stop_if_started(view.session.id, endpoint, job_id)
        if exc.code == "job_running":
            raise SessionBusy(body.session_id, str(exc.details.get("running_job_id"))) from None
        raise
    except BaseException:  # cancelled (the caller went away) or broken: still not queued
        cut_off = {
            "code": "harness_unavailable",
            "message": "the request that started this job ended before the session's harness "
            "took the job; send the prompt again",
        }
        await asyncio.shield(db(_fail_queued, job_id, cut_off))
        raise
    return endpoint


async def _start_checked(
    view: SessionView,
    endpoint: HarnessEndpoint,
    body: PromptIn,
    job_id: str,
    instructions: str,
    version: int,
) -> None:
    try:
        await _start_on_harness(view, endpoint, body, job_id, instructions, version)
    except HarnessRefused as refused:
        if refused.code != "job_expired":
            raise
        # Answered in time, yet too late on the harness's clock: the clocks differ. As good as
        # a timeout for what follows (no retry: it would be refused the same way).
        raise HarnessUnavailable(
            "the session's harness refused the job as expired: its clock is ahead of the "
            "control plane's by more than VWM_HARNESS_CLOCK_SKEW_S; fix the clocks or raise "
            "that margin, then try again",
            timed_out=True,
        ) from None


async def _stop_if_started(session_id: str, dispatched_to: HarnessEndpoint, job_id: str) -> None:
    """A harness kept by `recover` answered its probe: it was slow, not hung, and may have started
    the job after all. Cancel it there, so a job whose caller got 503 does not run unrecorded."""
    with contextlib.suppress(HarnessCallError, RuntimeBackendError, DbError):
        _, endpoint = await reach(session_id)
        if endpoint != dispatched_to:
            return  # replaced: the old harness and its CLI are gone
        async with client_for(endpoint) as harness:
            await harness.cancel(job_id)


def _fail_queued(session: Session, job_id: str, error: dict[str, Any]) -> None:
    """A job that never started fails, and gives its idempotency key back: the same key sent
    again is a new attempt, not a replay of this failure."""
    row = _get_job(session, job_id)
    if row.status == JobStatus.QUEUED:
        transition_job(session, row, JobStatus.FAILED, error=error, idempotency_key=None)


def _stale_after_s() -> float:
    """How long a job may stay queued: two dispatch attempts and a relaunch between them. After
    that no harness takes it any more (each attempt's `not_after` has passed)."""
    current = settings()
    return 2 * current.harness.dispatch_s + current.harness_ready_timeout_s


def _expire_if_stale(session: Session, job_id: str | None) -> bool:
    """Fail a job still queued past its dispatch bound: the request that queued it died (a
    crash, a platform timeout), and no harness starts it after its `not_after` any more."""
    row = session.get(Job, job_id) if job_id else None
    if row is None or row.status != JobStatus.QUEUED:
        return False
    created = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC)
    if datetime.now(UTC) - created < timedelta(seconds=_stale_after_s()):
        return False
    error = {
        "code": "harness_unavailable",
        "message": "the job never reached the session's harness (its dispatch was cut off); "
        "send the prompt again",
    }
    _fail_queued(session, row.id, error)
    return True


async def _start_on_harness(
    view: SessionView,
    endpoint: HarnessEndpoint,
    body: PromptIn,
    job_id: str,
    instructions: str,
    version: int,
) -> None:
    async with client_for(endpoint) as harness:
        if applied_instructions.get(view.session.id) != version:
            # Hot instructions: the harness rewrites the instruction file if they changed.
            await harness.bootstrap(bootstrap_body(view, instructions))
            applied_instructions[view.session.id] = version
        await harness.start_job(
            {"prompt": body.prompt, "job_id": job_id, "timeout_s": body.timeout_s}
        )


async def _finishing(endpoint: HarnessEndpoint, job_id: str | None) -> bool:
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


def _start_recorder(
    job_id: str, session_id: str, endpoint: HarnessEndpoint, instructions_version: int
) -> None:
    task = asyncio.create_task(_record(job_id, session_id, endpoint, instructions_version))
    _recorders[job_id] = task
    task.add_done_callback(lambda _: _recorders.pop(job_id, None))


async def _wait_recorded(job_id: str, bound_s: float | None = None) -> None:
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
    row = _get_job(session, job_id)
    if row.status in ACTIVE_JOB_STATUSES:
        transition_job(session, row, JobStatus.FAILED, error=error)


EndpointSource = Callable[[], Awaitable[HarnessEndpoint]]


def _relay(job_id: str, after: int, harness: EndpointSource | None) -> EventSourceResponse:
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
                        sent = int(message.id or sent)
                # The stream ends once the job is recorded: a caller that sends the next prompt
                # right after the last event must not find this one still running.
                await _wait_recorded(job_id)
                return
            except Exception:  # the harness is gone: go on from the stored record
                logger.info("relaying from the stored record", extra={"job_id": job_id})
                # Its recorder sees the same loss and fails the job; let it finish first.
                await _wait_recorded(job_id, settings().harness.stream_idle_s)
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
    from sqlalchemy import select

    from functions.db.models import TelemetryRequest

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


async def get_job(request: Request) -> Response:
    job_id = request.path_params["job_id"]

    def read(session: Session) -> dict[str, Any]:
        _expire_if_stale(session, job_id)  # a job left queued by a dead request reads `failed`
        return job_out(_get_job(session, job_id))

    return JSONResponse(await db(read))


async def job_events(request: Request) -> Response:
    job_id = request.path_params["job_id"]
    after = resume_point(request)  # ASCII digits only, else 400 invalid_parameter
    job, session_status = await db(lambda s: _job_and_session_status(s, job_id))
    if job.status in ("queued", "running") or session_status == "ready":
        return _relay(job_id, after, harness=lambda: _endpoint_of(job.session_id))
    return _relay(job_id, after, harness=None)


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
    if job.status in ("queued", "running"):
        _, endpoint = await reach(job.session_id)
        try:
            async with client_for(endpoint) as harness:
                await harness.cancel(job_id)
        except HarnessUnavailable:
            # A hung harness cancels nothing; replacing it stops the job, which its recorder
            # then fails. Only if the harness was not replaced does the caller retry.
            await recover(job.session_id)
            await _wait_recorded(job_id, settings().harness.stream_idle_s)
            if (await db(lambda s: _get_job(s, job_id))).status in ACTIVE_JOB_STATUSES:
                raise
        else:
            await _wait_recorded(job_id)
    return JSONResponse(await db(lambda s: job_out(_get_job(s, job_id))))


TAGS = ("prompts",)
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
