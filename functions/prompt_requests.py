"""Prompt requests (`dev.vwm.prompt.requested`) as the control plane takes them: the job row.

Any service may post one to the broker; `POST /v1/prompts` in async mode publishes one too
(`publish`). Its job is named by the event's `source` + `id` (`eventing.events.prompt_job_id`),
so whoever sees the event first (the `events` function, the delivery to the session's harness)
queues the same job, once: `accept` is idempotent by that id. The job waits `queued` for its
turn on the harness, which runs it (`harness.prompt_requests`); every event of the job carries
the request's id as `causationid`.

A request the session can never run gets its answer at once, as the `dev.vwm.job.failed` the
sender is waiting for (`lifecycle_events.job_failed`, with the request's id as `causationid`):
`session_not_found` (no such session: no row can hold it), `session_ended`, or the sink policy's
`sink_url_invalid` / `sink_url_not_allowed` for a `reply_to` it refuses (a failed row).

Signatures (`eventing.signatures`): the harness takes a delivery without its bearer token (a
Knative Trigger's) only when the request carries a `vwmauth` signed with the session's token.
`publish` signs what it publishes; `signed_copy` is the signed twin of another service's
request, which the `events` function forwards in Knative mode. A request whose `vwmauth` is
there but wrong is refused by `accept` (`EventError` ``invalid_signature``): nothing is queued.
"""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from eventing import signatures
from eventing.events import (
    CONTROL_PLANE_SOURCE,
    EventError,
    PromptRequested,
    VwmEvent,
    new_event,
    prompt_job_id,
)
from functions.broker.outbox import add
from functions.context import settings, token_key
from functions.db.errors import NotFoundError, SessionEnded
from functions.db.models import Job, JobMode, JobStatus, WorkerSession
from functions.db.transitions import PromptRequest, start_job
from functions.lifecycle_events import job_failed, job_failed_event
from functions.repo_policy import RepoPolicyError, allow_local_repos
from functions.sink_policy import check_sink_url

logger = logging.getLogger(__name__)


def request_of(event: VwmEvent) -> tuple[PromptRequest, PromptRequested]:
    data = event.data
    if not isinstance(data, PromptRequested):
        raise TypeError(f"{event.type} is not a prompt request")
    job_id = prompt_job_id(event.source, event.id)
    return PromptRequest(job_id, event.id, data.reply_to), data


def is_signed(event: VwmEvent) -> bool:
    """True when the request carries a valid `vwmauth` for its session, False when it carries
    none; `EventError` ``invalid_signature`` (401, never retried) when it carries a wrong one
    (logged without the value)."""
    try:
        return signatures.check(_token_of(event), event)
    except EventError:
        logger.warning(
            "a prompt request with a signature that does not verify: refused",
            extra={
                "event_id": event.id,
                "event_source": event.source,
                "session_id": event.sessionid,
            },
        )
        raise


def signed_copy(event: VwmEvent) -> VwmEvent:
    """`event` signed for its session: the same id, source, data and extensions, so every party
    still names the same job, and the `events` function sees a redelivery it has handled."""
    return signatures.signed(_token_of(event), event)


def _token_of(event: VwmEvent) -> str:
    return token_key().token(str(event.sessionid))


def accept(session: Session, event: VwmEvent) -> Job | None:
    """The request's job, queued now or found queued (or ended) from an earlier delivery. A
    request the session can never run is answered with `job.failed` in this transaction;
    None when there is no such session (and so no row). `EventError` ``invalid_signature``,
    before anything is written, for a request whose `vwmauth` does not verify. With Knative
    eventing, an unsigned request whose job is queued now is forwarded signed (`signed_copy`)
    in this transaction."""
    request, data = request_of(event)
    signed = is_signed(event)
    if (known := session.get(Job, request.job_id)) is not None:
        return known
    session_id = str(event.sessionid)
    if (refused := _refused_reply_to(session, data.reply_to)) is not None:
        return _failed_at_once(session, session_id, request, data, refused)
    try:
        job = start_job(
            session,
            session_id,
            prompt=data.prompt,
            mode=JobMode.ASYNC,
            timeout_s=math.ceil(data.timeout_s) if data.timeout_s else None,
            request=request,
        ).job
    except NotFoundError:
        error = {
            "code": "session_not_found",
            "message": f"there is no session {session_id}; create one (POST /v1/sessions) and "
            "send the prompt to it",
        }
        return _failed_at_once(session, session_id, request, data, error)
    except SessionEnded as ended:
        error = {"code": ended.code, "message": ended.message}
        # Its reply_to passed the policy: the sender hears of the failure there too.
        return _failed_at_once(session, session_id, request, data, error, request.reply_to)
    if not signed and settings().eventing == "knative":
        # The session's Trigger takes signed requests only (a Trigger carries no credential):
        # another service's request is forwarded once, signed, with the job queued. The copy
        # comes back to the events function too: the same source and id, so a duplicate.
        add(session, signed_copy(event))
        logger.info(
            "prompt request forwarded signed to its session",
            extra={"event_id": event.id, "event_source": event.source, "job_id": job.id},
        )
    return job


def _refused_reply_to(session: Session, reply_to: str | None) -> dict[str, Any] | None:
    """Why the sink policy refuses `reply_to` (None: it may be called, or there is none)."""
    if reply_to is None:
        return None
    allow_local = allow_local_repos(session, settings().allow_local_repos)
    try:
        check_sink_url(reply_to, allow_local=allow_local, what="reply_to")
    except RepoPolicyError as refused:
        return {"code": refused.code, "message": refused.message}
    return None


def _failed_at_once(
    session: Session,
    session_id: str,
    request: PromptRequest,
    data: PromptRequested,
    error: dict[str, Any],
    reply_to: str | None = None,
) -> Job | None:
    """The request's job, failed before it ran, and its `job.failed`. None (the event only)
    when the session is not there to hold the row."""
    if session.get(WorkerSession, session_id) is None:
        add(session, job_failed_event(session_id, request.job_id, request.causation_id, error))
        logger.warning(
            "a prompt request names no session: answered with job.failed",
            extra={"session_id": session_id, "job_id": request.job_id},
        )
        return None
    logger.warning(
        "a prompt request that can never run: answered with job.failed",
        extra={"session_id": session_id, "job_id": request.job_id, "code": error["code"]},
    )
    row = Job(
        id=request.job_id,
        session_id=session_id,
        prompt=data.prompt,
        mode=JobMode.ASYNC,
        status=JobStatus.FAILED,
        causation_id=request.causation_id,
        reply_to=reply_to,
        error=error,
        finished_at=datetime.now(UTC),
    )
    session.add(row)
    session.flush()
    job_failed(session, row)
    return row


def publish(session: Session, job: Job, data: PromptRequested) -> VwmEvent:
    """The prompt request for a job the HTTP API queued (async mode), signed for the session
    (a Trigger delivers it to the harness as it is), into the outbox in the caller's
    transaction: its delivery runs the job like any other request. The caller made `job` with
    the id the event names (`prompt_job_id(CONTROL_PLANE_SOURCE, event id)`)."""
    event_id = str(job.causation_id)
    event = new_event(
        data, source=CONTROL_PLANE_SOURCE, session_id=job.session_id, event_id=event_id
    )
    event = signed_copy(event)
    add(session, event)
    return event
