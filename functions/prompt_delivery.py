"""The delivery of prompt requests to their sessions' harnesses in `vwm up`.

In production a Trigger per session (filter: its `sessionid`) delivers each
`dev.vwm.prompt.requested` to the session's Knative Service, which wakes it if it scaled to
zero. The embedded broker does the same through one built-in subscription whose sink is
`SessionPromptSink`, per event:

1. queue the request's job, once (`functions.prompt_requests.accept`); a request already
   answered (its job ended, or the session can never run it) is done;
2. reach the session's harness, relaunching it on its workspace if its process is gone (as an
   HTTP prompt does); a session still starting is retried, an ended one fails the job;
3. refuse the job if a budget over the session is spent (`functions.budgets`);
4. bring the harness up to date (instructions, model, skills) when they changed and it is idle;
5. POST the event to the harness's `POST /v1/events`, which runs the job inside the delivery
   and answers when it has ended (`harness.prompt_requests`); then record the job from the
   harness at once rather than wait for its events.

A harness that does not answer is retried by the broker (a redelivery joins the job the
harness may already run); one that refuses the request for good fails the job with its
error. When the retries run out, `undelivered` fails the job with `harness_unavailable`. Each
failure is published as `dev.vwm.job.failed`, so the sender hears of it.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from sqlalchemy.orm import Session

from eventing.codec import to_binary
from eventing.events import PromptRequested, VwmEvent
from functions.broker.delivery import Outcome
from functions.broker.subscriptions import SinkResult
from functions.budgets import BudgetRefusal, job_budget
from functions.context import db, settings
from functions.db.errors import ConflictError, DbError, NotFoundError
from functions.db.models import ACTIVE_JOB_STATUSES, Job
from functions.harness_client import (
    HarnessCallError,
    HarnessRefused,
    HarnessUnavailable,
)
from functions.job_dispatch import fail_queued
from functions.job_recording import record_from_harness
from functions.prompt_requests import accept, request_of
from functions.runtime.errors import RuntimeBackendError
from functions.session_runtime import SessionView, client_for, job_timeout_s, reach, recover
from functions.session_sync import bring_up_to_date, wanted

logger = logging.getLogger(__name__)

# The built-in subscription, written as a Knative Trigger's spec: a harness that is restarting
# gets about two minutes of retries before the job fails.
SESSION_PROMPTS_SPEC: dict[str, Any] = {
    "filters": [{"exact": {"type": "dev.vwm.prompt.requested"}}],
    "delivery": {"retry": 8, "backoffPolicy": "exponential", "backoffDelay": "PT0.5S"},
}
# The harness's own job bound when neither the request nor the worker or runtime sets one.
HARNESS_JOB_TIMEOUT_S = 1800.0


class SessionPromptSink:
    """Delivers each prompt request to its session's harness (see the module's docstring)."""

    async def deliver(self, event: VwmEvent) -> SinkResult:
        job = await db(accept, event)
        if job is None or job.status not in ACTIVE_JOB_STATUSES:
            return SinkResult(Outcome.ACCEPTED, 200)  # answered already (job.failed, or its end)
        try:
            view, endpoint = await reach(job.session_id)
        except ConflictError as exc:
            if exc.code == "session_not_ready":
                return SinkResult(Outcome.RETRY, 409, exc.message)  # still starting
            return await _fail(job, exc.code, exc.message)
        except RuntimeBackendError as exc:
            if not exc.retryable:
                return await _fail(job, exc.code, exc.message)
            return SinkResult(Outcome.RETRY, 503, exc.message)
        try:
            # A spent budget fails the job before the harness hears of it. An open one cannot
            # travel with the event yet (the harness builds the job from the event alone):
            # such a job runs without its meter charging (docs/budgets.md).
            await db(job_budget, job.session_id)
        except BudgetRefusal as refused:
            return await _fail(job, refused.code, refused.message)
        try:
            async with client_for(endpoint) as harness:
                has = await _brought_up_to_date(view, harness)
                await db(_stamp_versions, job.id, has)
                headers, body = to_binary(event)
                await harness.deliver(headers, body, _bound(view, event))
        except HarnessUnavailable as exc:
            # Retried by the broker: to the same harness if it was slow (the redelivery joins
            # its job), to a relaunched one if it is gone or hung.
            await recover(job.session_id)
            return SinkResult(Outcome.RETRY, 503, exc.message)
        except HarnessRefused as exc:
            if exc.status >= 500:
                return SinkResult(Outcome.RETRY, exc.status, exc.message)
            return await _fail(job, exc.code, exc.message)
        except HarnessCallError as exc:  # an answer that does not fit the API
            return await _fail(job, exc.code, exc.message)
        with contextlib.suppress(HarnessCallError, DbError):
            await record_from_harness(job.id, endpoint)  # its events are on their way too
        return SinkResult(Outcome.ACCEPTED, 200)


async def _brought_up_to_date(view: SessionView, harness: Any) -> tuple[int, int]:
    """The global instructions version and worker revision the harness has once brought up to
    date. Best effort: a harness busy with a job refuses a bootstrap (409), and the request's
    job then runs with what it has; the next request brings the rest."""
    want = await db(wanted, view)
    try:
        await bring_up_to_date(view, harness, want)
    except HarnessRefused:
        row = view.session
        return row.instructions_version or 0, row.worker_revision or 0
    return want.instructions_version, want.worker_revision


def _stamp_versions(session: Session, job_id: str, versions: tuple[int, int]) -> None:
    """The versions the job runs with, for whoever records it (as a sync prompt's dispatch
    stamps them)."""
    row = session.get(Job, job_id)
    if row is not None and row.status in ACTIVE_JOB_STATUSES:
        row.instructions_version, row.worker_revision = versions


def _bound(view: SessionView, event: VwmEvent) -> float:
    """How long the harness may take to answer: the wait for the job's turn, then the job."""
    data = event.data
    requested = data.timeout_s if isinstance(data, PromptRequested) else None
    job_s = requested or job_timeout_s(view) or HARNESS_JOB_TIMEOUT_S
    current = settings()
    return current.prompt_wait_s + job_s + current.harness.call_s


async def _fail(job: Job, code: str, message: str) -> SinkResult:
    """The request can never run on this session: its job fails (and `job.failed` says so);
    the delivery is done."""
    await db(fail_queued, job.id, {"code": code, "message": message})
    logger.warning(
        "a prompt request's job failed before it ran",
        extra={"job_id": job.id, "session_id": job.session_id, "code": code},
    )
    return SinkResult(Outcome.ACCEPTED, 200)


async def undelivered(event: VwmEvent, answer: str) -> None:
    """The broker gave up delivering the request (its retries ran out): its job fails."""
    request, _ = request_of(event)
    error = {
        "code": "harness_unavailable",
        "message": "the prompt request could not be delivered to the session's harness "
        f"({answer[:500] or 'no answer'}); check the session, then send it again",
    }
    with contextlib.suppress(NotFoundError):
        await db(fail_queued, request.job_id, error)
