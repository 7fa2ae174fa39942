"""Recording a job from its harness's own log: the control plane can always ask the harness again.

A job's record (row, stored log, telemetry) is written by whoever learns its end first, and
every writer is idempotent by state (`functions.telemetry_writer.finish_job` finishes a job
once):

- the `events` function, from the harness's ``dev.vwm.job.*`` CloudEvents (the durable path:
  the harness publishes through an outbox on its volume, so a control plane that was down
  meanwhile still gets them);
- a caller that followed the job to its end (sync and stream prompts), from the events it
  relayed, so it answers without waiting for the broker;
- the reconciler (`functions.reconcile`), from the log the harness still holds, for a job the
  events never recorded.

Nothing here lives beyond a call: no task registry, no cache of live work.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sqlalchemy.orm import Session

from eventing.errors import NOT_FOUND
from eventing.job_events import JobEvent
from functions.context import backend, db, settings
from functions.db.models import ACTIVE_JOB_STATUSES, Job, JobStatus
from functions.db.repositories import Jobs
from functions.db.transitions import transition_job
from functions.harness_client import HarnessClient, HarnessRefused, HarnessUnavailable, decode
from functions.job_log import record_log
from functions.lifecycle_events import job_failed
from functions.runtime.base import HarnessEndpoint, RuntimeHandle
from functions.runtime.errors import RuntimeBackendError
from functions.session_runtime import client_for, load, recover

logger = logging.getLogger(__name__)

# How many times a job's stream is followed again after it broke while its harness still
# answers about the job (`answers_about`): a kept-open connection reset, a proxy's cut. Past
# that, the job's record (the harness's CloudEvents, the reconciler) says how it ended.
REATTACH_LIMIT = 3


async def record_followed(job_id: str, events: list[JobEvent], harness: HarnessClient) -> None:
    """Record a job from the whole log a caller followed (seq 1 to ``job_finished``)."""
    stdout = await raw_output(harness, job_id)
    await db(record_log, job_id, events, stdout, settings().raw_output_limit)


async def record_from_harness(job_id: str, endpoint: HarnessEndpoint) -> bool:
    """Record the job from its harness's log if it has finished there. True when its row is
    final afterwards (recorded now or before); False while it still runs. A harness that no
    longer knows the job (a new workspace) fails it with `harness_lost`. Raises
    `HarnessUnavailable` when the harness does not answer."""
    status = await db(_status, job_id)
    if status not in ACTIVE_JOB_STATUSES:
        return True
    async with client_for(endpoint) as harness:
        try:
            state = await harness.job(job_id)
        except HarnessRefused as refused:
            if refused.code != NOT_FOUND:
                raise
            if status == JobStatus.QUEUED:
                # Its start may still be on the way to the harness: the job expires once its
                # dispatch bound has passed (`job_dispatch.expire_if_stale`), not before.
                return False
            await db(fail_unrecorded, job_id, lost_error("its harness has no record of it"))
            return True
        if state.status == JobStatus.RUNNING:
            return False
        events = [decode(message) async for message in harness.events(job_id)]
        await record_followed(job_id, events, harness)
    return True


async def raw_output(harness: HarnessClient, job_id: str) -> str:
    """The CLI's literal stdout as the harness kept it ("" if it kept none, or the harness went
    quiet after the job ended: the events are what counts)."""
    try:
        data = await harness.files.read(f".vwm/jobs/{job_id}.stdout")
    except HarnessRefused as refused:
        if refused.code == NOT_FOUND:
            return ""
        raise
    except HarnessUnavailable:
        logger.warning("could not read the job's raw output", extra={"job_id": job_id})
        return ""
    return data.decode("utf-8", errors="replace")


async def follow_to_end(job_id: str, session_id: str, endpoint: HarnessEndpoint) -> None:
    """Follow the job's events to its end and record it. A stream that breaks while the harness
    still answers about the job is followed again from its last event (`REATTACH_LIMIT` times);
    a harness that falls silent (no event, no heartbeat within the bound) is replaced and the job
    fails with it. Returns once the job's row is final."""
    if await db(is_final, job_id):
        return  # a replayed idempotency key of a finished job
    events: list[JobEvent] = []
    for attempt in range(1, REATTACH_LIMIT + 2):
        after = events[-1].seq if events else 0
        try:
            async with client_for(endpoint) as harness:
                events += [decode(message) async for message in harness.events(job_id, after)]
                await record_followed(job_id, events, harness)
            return
        except HarnessUnavailable as exc:
            if attempt <= REATTACH_LIMIT and await answers_about(job_id, session_id):
                logger.info(
                    "re-attaching to the harness's stream",
                    extra={"job_id": job_id, "after": after, "reason": str(exc)},
                )
                continue
            logger.warning(
                "the job's harness stopped answering", extra={"job_id": job_id, "reason": str(exc)}
            )
            await lose_with_harness(job_id, session_id)
            break
    # Lost with its harness (failed above), or recorded from the harness's CloudEvents or by
    # the reconciler: a sync answer is never a job still running.
    pause = 0.2
    while not await db(is_final, job_id):
        await asyncio.sleep(pause)
        pause = min(pause * 2, 2.0)


async def lose_with_harness(job_id: str, session_id: str) -> bool:
    """The job's harness stopped answering: if it still does not answer about the job, the job
    is lost with it and fails (`harness_unavailable`), and the harness is replaced. True when
    the job was failed. The job fails first: a harness launched in its place reports the jobs
    it finds cut short (`harness_restarted`), and the control plane's reason must win."""
    if await answers_about(job_id, session_id):
        return False
    unavailable = {
        "code": "harness_unavailable",
        "message": "the session's harness stopped answering and was replaced; the job is lost, "
        "send the prompt again (the CLI session resumes)",
    }
    failed = await db(fail_unrecorded, job_id, unavailable)
    await recover(session_id)
    return failed


async def answers_about(job_id: str, session_id: str) -> bool:
    """Whether the session's harness is up and answers a call about the job within its bound
    (an authenticated call: a harness that refuses the token counts as not answering)."""
    try:
        view = await db(load, session_id)
        if not view.session.runtime_state:
            return False
        handle = RuntimeHandle.from_dict(view.session.runtime_state)
        runtime = backend()
        if await runtime.status(handle) != "running":
            return False
        async with client_for(runtime.endpoint(handle)) as harness:
            await harness.job(job_id)
    except HarnessRefused:
        return True  # it answered (e.g. it does not know the job): not hung
    except (HarnessUnavailable, RuntimeBackendError):
        return False
    return True


def _status(session: Session, job_id: str) -> str:
    return Jobs(session).get(job_id).status


def is_final(session: Session, job_id: str) -> bool:
    row = session.get(Job, job_id)
    return row is not None and row.status not in ACTIVE_JOB_STATUSES


def fail_unrecorded(session: Session, job_id: str, error: dict[str, Any]) -> bool:
    """Fail a job whose end no log will ever tell; False if it had ended already."""
    row = Jobs(session).get(job_id)
    if row.status not in ACTIVE_JOB_STATUSES:
        return False
    job_failed(session, transition_job(session, row, "failed", error=error))
    return True


def lost_error(why: str) -> dict[str, Any]:
    """The error of a job whose harness is gone: `harness_lost`, saying why and what to do."""
    return {
        "code": "harness_lost",
        "message": f"the job's harness was lost ({why}); send the prompt again (the CLI "
        "session resumes)",
    }
