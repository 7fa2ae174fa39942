"""Starting a queued job on its session's harness, within bounds: used by the `prompts` function.

However a start fails (refused, no answer in time, the request cancelled), the job row ends
`failed`, never `queued`, and a job that never started gives its idempotency key back. A job
start carries `not_after`, so a harness that reads it late (stopped, then woken) runs nothing;
a job left queued by a request that died reads `failed` once its dispatch bound has passed
(docs/control-plane.md, "A hung harness").
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from eventing.budgets import JobBudget
from eventing.errors import JOB_EXPIRED, JOB_RUNNING
from functions.budgets import BudgetRefusal, job_budget
from functions.context import db, settings
from functions.db.errors import DbError, SessionBusy
from functions.db.models import Job, JobStatus
from functions.db.repositories import Jobs
from functions.db.transitions import transition_job
from functions.harness_client import (
    HarnessCallError,
    HarnessRefused,
    HarnessUnavailable,
)
from functions.lifecycle_events import job_failed
from functions.runtime.base import HarnessEndpoint
from functions.runtime.errors import RuntimeBackendError
from functions.session_runtime import SessionView, client_for, reach, recover
from functions.session_sync import Wanted, bring_up_to_date


@dataclass(frozen=True)
class JobStart:
    """What the harness is asked to run."""

    job_id: str
    prompt: str
    timeout_s: int | None
    # Where its meter charges each model call, when a budget applies (set by `dispatch`).
    budget: JobBudget | None = None

    def body(self) -> dict[str, Any]:
        """The job start as the harness takes it; no budget: no `budget` key at all."""
        body: dict[str, Any] = {
            "prompt": self.prompt,
            "job_id": self.job_id,
            "timeout_s": self.timeout_s,
        }
        if self.budget is not None:
            body["budget"] = self.budget.model_dump(mode="json")
        return body


async def dispatch(
    view: SessionView,
    endpoint: HarnessEndpoint,
    start: JobStart,
    want: Wanted,
) -> HarnessEndpoint:
    """Start the queued job on the harness; returns where it runs. However that fails (refused,
    no answer in time, this request cancelled), the job row ends `failed`, never `queued`, and a
    job that never started gives its idempotency key back (the same key runs it anew).

    A harness that refused the connection or dropped it at once (gone a moment ago) is
    relaunched and asked once more: nothing ran. One that did not answer in time is replaced and
    the caller gets `harness_unavailable` without a retry: the call may have reached a harness
    that then hung, and its `not_after` makes sure it never runs late.

    A session under a budget is checked first: spent, the job fails `budget_exceeded` and
    `BudgetExceeded` is raised without a call to the harness; open, the job carries where its
    meter charges (`functions.budgets`)."""
    start = await _with_budget(view, start)
    try:
        try:
            await _start_checked(view, endpoint, start, want)
        except HarnessUnavailable as exc:
            if exc.timed_out:
                raise
            try:
                view, endpoint = await reach(view.session.id, probe=True)
            except RuntimeBackendError:
                raise exc from None
            await _start_checked(view, endpoint, start, want)
    except HarnessCallError as exc:
        await db(fail_queued, start.job_id, {"code": exc.code, "message": exc.message})
        if isinstance(exc, HarnessUnavailable):
            await recover(view.session.id)
            if exc.timed_out:
                await _stop_if_started(view.session.id, endpoint, start.job_id)
        if exc.code == JOB_RUNNING:
            raise SessionBusy(view.session.id, str(exc.details.get("running_job_id"))) from None
        raise
    except BaseException:  # cancelled (the caller went away) or broken: still not queued
        cut_off = {
            "code": "harness_unavailable",
            "message": "the request that started this job ended before the session's harness "
            "took the job; send the prompt again",
        }
        await asyncio.shield(db(fail_queued, start.job_id, cut_off))
        raise
    return endpoint


async def _with_budget(view: SessionView, start: JobStart) -> JobStart:
    try:
        budget = await db(job_budget, view.session.id)
    except BudgetRefusal as refused:
        await db(fail_queued, start.job_id, {"code": refused.code, "message": refused.message})
        refused.details["job_id"] = start.job_id
        raise
    return start if budget is None else replace(start, budget=budget)


async def _start_checked(
    view: SessionView, endpoint: HarnessEndpoint, start: JobStart, want: Wanted
) -> None:
    try:
        await _start_on_harness(view, endpoint, start, want)
    except HarnessRefused as refused:
        if refused.code != JOB_EXPIRED:
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


def fail_queued(session: Session, job_id: str, error: dict[str, Any]) -> None:
    """A job that never started fails, and gives its idempotency key back: the same key sent
    again is a new attempt, not a replay of this failure."""
    row = Jobs(session).get(job_id)
    if row.status == JobStatus.QUEUED:
        row = transition_job(session, row, JobStatus.FAILED, error=error, idempotency_key=None)
        job_failed(session, row)


# About how long the broker retries a prompt request's delivery to its harness (the delivery
# spec of `functions.prompt_delivery`: 8 retries, exponential from 0.5 s).
PROMPT_DELIVERY_RETRY_S = 130.0


def _stale_after_s() -> float:
    """How long a job may stay queued: two dispatch attempts and a relaunch between them. After
    that no harness takes it any more (each attempt's `not_after` has passed)."""
    current = settings()
    return 2 * current.harness.dispatch_s + current.harness_ready_timeout_s


def expire_if_stale(session: Session, job_id: str | None) -> bool:
    """Fail a job still queued past its dispatch bound: the request that queued it died (a
    crash, a platform timeout), and no harness starts it after its `not_after` any more."""
    row = session.get(Job, job_id) if job_id else None
    if row is None or row.status != JobStatus.QUEUED:
        return False
    created = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC)
    bound = _stale_after_s()
    if row.causation_id is not None:
        # A prompt request's job may wait its turn on the harness first (VWM_PROMPT_WAIT_S),
        # and for the broker's retries of its delivery.
        bound += settings().prompt_wait_s + PROMPT_DELIVERY_RETRY_S
    if datetime.now(UTC) - created < timedelta(seconds=bound):
        return False
    error = {
        "code": "harness_unavailable",
        "message": "the job never reached the session's harness (its dispatch was cut off); "
        "send the prompt again",
    }
    fail_queued(session, row.id, error)
    return True


async def _start_on_harness(
    view: SessionView, endpoint: HarnessEndpoint, start: JobStart, want: Wanted
) -> None:
    async with client_for(endpoint) as harness:
        # Hot instructions, model and skills: what changed since the harness last got them.
        await bring_up_to_date(view, harness, want)
        await harness.start_job(start.body())
