"""The reconciler: what a `dev.vwm.tick` does (a PingSource in production, a timer in `vwm up`),
and what `vwm up` runs once when it starts.

It compares the database with the harnesses and fixes what a process that died left behind:

- a job `running` in the database but finished on its harness is recorded from the harness's
  log; one whose harness is gone, hung or no longer knows it fails with a reason saying so; one
  left `queued` past its dispatch bound fails (`functions.job_dispatch.expire_if_stale`);
- a session stuck in `provisioning` fails (`session_interrupted`: its creator died) and its
  harness is stopped; one stuck in `ending` has its end carried on (`sessions.finish_ending`);
- a ready session idle (no job) longer than its worker's ``timeouts.idle_s`` or
  ``VWM_SESSION_IDLE_S``, or older than ``timeouts.max_age_s`` or ``VWM_SESSION_MAX_AGE_S``,
  is ended through the same path as ``DELETE``;
- a ready session whose harness is gone (its process died; its Knative Service vanished or
  failed) gets it back on the same workspace (`session_runtime.relaunch`), which resumes its CLI
  session from the state on the volume; one whose workspace is gone fails (`workspace_lost`);
- a ready session's harness idle (no job) past ``VWM_HARNESS_IDLE_S`` is stopped, its workspace
  kept, where the backend does not scale to zero itself (`session_runtime.stop_if_idle`);
- harnesses (and on Knative their Triggers and Secrets) that no session owns are removed
  (`RuntimeBackend.sweep`); on Knative, so are the volumes of sessions that have no row or have
  ended (`VolumeKeeper`: what a teardown cut short left), unless volumes are retained;
- on Knative, the warm pool of each runtime's shape is filled to ``VWM_WARM_HARNESSES``
  Services, and its ready members probed so their pods stay up (`ServicePooling`).

"Stuck" means unchanged for longer than the work can take (the harness bounds of
`HarnessCallSettings`), or, when `vwm up` starts, anything from before it started: the embedded
control plane is the only one on its database, so whatever was in flight died with the last
process. Every step is idempotent by state, so two replicas ticking at once, or a tick cut off
half-way, leave nothing wrong; what one tick cannot do now (a harness that does not answer), the
next one tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, load_only

from eventing.events import EndReason
from functions import lifecycle_events
from functions.context import backend, db, read, settings
from functions.db.errors import ConflictError, DbError, NotFoundError
from functions.db.models import (
    ACTIVE_JOB_STATUSES,
    Job,
    JobStatus,
    ProcessedEvent,
    Runtime,
    SessionStatus,
    Worker,
    WorkerSession,
)
from functions.db.transitions import transition_session
from functions.harness_client import HarnessCallError
from functions.job_dispatch import expire_if_stale
from functions.job_recording import (
    fail_unrecorded,
    lose_with_harness,
    lost_error,
    record_from_harness,
)
from functions.runtime.base import (
    IdleStopper,
    PoolShape,
    RuntimeHandle,
    ServicePooling,
    VolumeKeeper,
    idle_stopped,
)
from functions.runtime.errors import RuntimeBackendError
from functions.session_runtime import (
    idle_sessions,
    load,
    relaunch,
    runtime_shape,
    stop_if_idle,
)

logger = logging.getLogger(__name__)

# Sessions ended at once by one pass (each end saves work: a push may take a while).
END_CONCURRENCY = 4


@dataclass
class Report:
    """What one pass did, by session or job id (logged, and returned to tests)."""

    jobs_recorded: list[str] = field(default_factory=list)
    jobs_failed: list[str] = field(default_factory=list)
    sessions_failed: list[str] = field(default_factory=list)
    sessions_ended: dict[str, str] = field(default_factory=dict)  # id -> reason
    harnesses_stopped: list[str] = field(default_factory=list)
    harnesses_relaunched: list[str] = field(default_factory=list)
    harnesses_idled: list[str] = field(default_factory=list)  # stopped for being idle
    volumes_removed: list[str] = field(default_factory=list)
    events_forgotten: int = 0  # processed-event ids past their retention, deleted
    warm_members_made: int = 0  # warm pool members made (Knative Services with their PVCs)

    def changed(self) -> bool:
        return any(
            (
                self.jobs_recorded,
                self.jobs_failed,
                self.sessions_failed,
                self.sessions_ended,
                self.harnesses_stopped,
                self.harnesses_relaunched,
                self.harnesses_idled,
                self.volumes_removed,
                self.events_forgotten,
                self.warm_members_made,
            )
        )


async def reconcile(*, interrupted_before: datetime | None = None) -> Report:
    """One pass. `interrupted_before`: everything in flight that last changed before this
    instant was cut off by a process that died (`vwm up` passes its start time)."""
    report = Report()
    now = datetime.now(UTC)
    await _jobs(report, now)
    await _stuck_sessions(report, now, interrupted_before)
    await _expired_sessions(report, now)
    await _vanished_harnesses(report, now)
    await _idle_harnesses(report)
    await _orphans(report)
    await _orphan_volumes(report)
    await _warm_pools(report)
    report.events_forgotten = await db(_forget_processed_events, now)
    if report.changed():
        logger.info("reconciled", extra={"report": report.__dict__})
    return report


# -- jobs --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ActiveJob:
    id: str
    status: str
    session_id: str
    session_status: str
    handle: dict[str, Any]


def _active_jobs(session: Session, changed_before: datetime) -> list[_ActiveJob]:
    rows = session.execute(
        select(
            Job.id, Job.status, WorkerSession.id, WorkerSession.status, WorkerSession.runtime_state
        )
        .join(WorkerSession, Job.session_id == WorkerSession.id)
        .where(Job.status.in_(ACTIVE_JOB_STATUSES), Job.created_at < changed_before)
        .order_by(Job.created_at)
    )
    return [_ActiveJob(*row) for row in rows]


async def _jobs(report: Report, now: datetime) -> None:
    # Not `interrupted_before`: a job's harness outlives the control plane, and may still run it.
    grace = timedelta(seconds=settings().reconcile_grace_s)
    for job in await db(_active_jobs, now - grace):
        try:
            await _job(report, job)
        except (HarnessCallError, RuntimeBackendError, DbError) as exc:
            # The next tick tries again; one job must not stop the others.
            logger.warning(
                "could not reconcile a job",
                extra={"job_id": job.id, "error": exc.message},
            )


async def _job(report: Report, job: _ActiveJob) -> None:
    if job.session_status in (SessionStatus.ENDED, SessionStatus.FAILED):
        gone = {"code": "session_ended", "message": "the job's session ended before it finished"}
        if await db(fail_unrecorded, job.id, gone):
            report.jobs_failed.append(job.id)
        return
    if job.status == JobStatus.QUEUED:
        if await db(expire_if_stale, job.id):
            report.jobs_failed.append(job.id)
        return
    if job.session_status != SessionStatus.READY or not job.handle:
        return  # ending: the end records its jobs
    handle = RuntimeHandle.from_dict(job.handle)
    runtime = backend()
    status = await runtime.status(handle)
    if status == "missing":
        if await db(fail_unrecorded, job.id, lost_error("its workspace is gone")):
            report.jobs_failed.append(job.id)
        return
    if status == "running":
        try:
            if await record_from_harness(job.id, runtime.endpoint(handle)):
                report.jobs_recorded.append(job.id)
            return
        except HarnessCallError:
            pass  # no answer: it is hung, or died a moment ago
    # Stopped, dead or mute: replaced, and the job is lost with it.
    if await lose_with_harness(job.id, job.session_id):
        report.jobs_failed.append(job.id)


# -- sessions stuck half-way -------------------------------------------------------------------


def _stuck(
    session: Session, provisioning_before: datetime, ending_before: datetime
) -> list[tuple[str, str, dict[str, Any]]]:
    rows = session.execute(
        select(WorkerSession.id, WorkerSession.status, WorkerSession.runtime_state).where(
            (
                (WorkerSession.status == SessionStatus.PROVISIONING)
                & (WorkerSession.created_at < provisioning_before)
            )
            | (
                (WorkerSession.status == SessionStatus.ENDING)
                & (WorkerSession.last_activity_at < ending_before)
            )
        )
    )
    return [(row[0], row[1], row[2]) for row in rows]


async def _stuck_sessions(
    report: Report, now: datetime, interrupted_before: datetime | None
) -> None:
    current = settings()
    bounds = current.harness
    grace = current.reconcile_grace_s
    # As long as the work may take when all goes well, plus the grace.
    provisioning_s = current.harness_ready_timeout_s + bounds.bootstrap_s + 2 * bounds.connect_s
    ending_s = bounds.shutdown_s + 2 * bounds.connect_s + bounds.call_s
    provisioning_before = now - timedelta(seconds=provisioning_s + grace)
    ending_before = now - timedelta(seconds=ending_s + grace)
    if interrupted_before is not None:
        provisioning_before = max(provisioning_before, interrupted_before)
        ending_before = max(ending_before, interrupted_before)
    for session_id, status, handle in await db(_stuck, provisioning_before, ending_before):
        try:
            if status == SessionStatus.PROVISIONING:
                await _fail_provisioning(session_id, handle)
                report.sessions_failed.append(session_id)
            else:
                from functions.sessions import finish_ending

                # Why it was ending is not kept; it was asked for (a client or the reconciler).
                await finish_ending(session_id, EndReason.REQUESTED)
                report.sessions_ended[session_id] = "interrupted"
        except (HarnessCallError, RuntimeBackendError, DbError) as exc:
            logger.warning(
                "could not carry on a stuck session",
                extra={"session_id": session_id, "error": exc.message},
            )


async def _fail_provisioning(session_id: str, handle: dict[str, Any]) -> None:
    """Its creator died before the session was ready: nobody waits for it any more, so it
    fails (the client creates another) and its harness, if it got one, is stopped."""
    if handle:
        with contextlib.suppress(RuntimeBackendError):
            await backend().teardown(RuntimeHandle.from_dict(handle))
    interrupted = {
        "code": "session_interrupted",
        "message": "the control plane stopped while this session was starting; create a new "
        "session",
    }
    await db(_fail_if_provisioning, session_id, interrupted)


def _fail_if_provisioning(session: Session, session_id: str, error: dict[str, Any]) -> None:
    row = session.get(WorkerSession, session_id)
    if row is not None and row.status == SessionStatus.PROVISIONING:
        row = transition_session(session, row, SessionStatus.FAILED, error=error)
        lifecycle_events.session_ended(session, row, EndReason.FAILED)


# -- idle and old sessions ---------------------------------------------------------------------


def _expired(session: Session, now: datetime) -> list[tuple[str, str]]:
    """Ready sessions with no active job whose idle time or age passed their limit."""
    current = settings()
    busy = select(Job.session_id).where(Job.status.in_(ACTIVE_JOB_STATUSES))
    rows = session.execute(
        select(WorkerSession, Worker.timeouts)
        .join(Worker, Worker.id == WorkerSession.worker_id)
        .where(WorkerSession.status == SessionStatus.READY, WorkerSession.id.not_in(busy))
    )
    expired: list[tuple[str, str]] = []
    for row, timeouts in rows:
        limits = timeouts or {}
        max_age = limits.get("max_age_s") or current.session_max_age_s
        idle = limits.get("idle_s") or current.session_idle_s
        if max_age and _aware(row.created_at) < now - timedelta(seconds=max_age):
            expired.append((row.id, "max_age"))
        elif idle and _aware(row.last_activity_at) < now - timedelta(seconds=idle):
            expired.append((row.id, "idle"))
    return expired


async def _expired_sessions(report: Report, now: datetime) -> None:
    from functions.sessions import end

    turns = asyncio.Semaphore(END_CONCURRENCY)

    async def end_one(session_id: str, reason: str) -> None:
        async with turns:
            try:
                _, saved = await end(session_id, EndReason(reason))
            except (NotFoundError, ConflictError):
                return  # ended or ending already, by a client or another replica
            except (HarnessCallError, RuntimeBackendError, DbError) as exc:
                logger.warning(
                    "could not end an expired session",
                    extra={"session_id": session_id, "error": exc.message},
                )
                return
            report.sessions_ended[session_id] = reason
            logger.info(
                "session ended by the reconciler",
                extra={"session_id": session_id, "reason": reason, "saved": saved},
            )

    expired = await db(_expired, now)
    await asyncio.gather(*(end_one(session_id, reason) for session_id, reason in expired))


# -- harnesses that are gone ------------------------------------------------------------------

# Ready sessions whose harness is checked at once by one pass (each is an API call on Knative).
STATUS_CONCURRENCY = 8
WORKSPACE_LOST = "workspace_lost"


def _ready(session: Session, changed_before: datetime) -> list[tuple[str, dict[str, Any]]]:
    rows = session.execute(
        select(WorkerSession.id, WorkerSession.runtime_state).where(
            WorkerSession.status == SessionStatus.READY,
            WorkerSession.ready_at < changed_before,
        )
    )
    return [(row.id, row.runtime_state) for row in rows if row.runtime_state]


async def _vanished_harnesses(report: Report, now: datetime) -> None:
    grace = timedelta(seconds=settings().reconcile_grace_s)
    turns = asyncio.Semaphore(STATUS_CONCURRENCY)

    async def check(session_id: str, state: dict[str, Any]) -> None:
        async with turns:
            try:
                handle = RuntimeHandle.from_dict(state)
                if idle_stopped(handle):
                    return  # down on purpose: the next call that needs it wakes it
                status = await backend().status(handle)
                if status == "running":
                    return
                if status == "missing":
                    await db(_fail_lost, session_id)
                    report.sessions_failed.append(session_id)
                    return
                view = await db(load, session_id)
                if view.session.status == SessionStatus.READY:
                    await relaunch(view, handle)
                    report.harnesses_relaunched.append(session_id)
            except (RuntimeBackendError, DbError) as exc:
                # The next tick tries again; one session must not stop the others.
                logger.warning(
                    "could not bring back a session's harness",
                    extra={"session_id": session_id, "error": str(exc)},
                )

    ready = await db(_ready, now - grace)
    await asyncio.gather(*(check(session_id, state) for session_id, state in ready))


async def _idle_harnesses(report: Report) -> None:
    """Stop the harnesses of sessions idle past ``VWM_HARNESS_IDLE_S``, where the backend does
    not scale them to zero itself (`IdleStopper`)."""
    idle_s = settings().harness_idle_s
    if not idle_s or not isinstance(backend(), IdleStopper):
        return
    turns = asyncio.Semaphore(STATUS_CONCURRENCY)

    async def stop(session_id: str) -> None:
        async with turns:
            try:
                if await stop_if_idle(session_id, idle_s):
                    report.harnesses_idled.append(session_id)
            except (RuntimeBackendError, DbError) as exc:
                logger.warning(
                    "could not stop an idle harness",
                    extra={"session_id": session_id, "error": str(exc)},
                )

    idle = [
        session_id
        for session_id, handle in await read(idle_sessions, idle_s)
        if not idle_stopped(handle)  # stopped already
    ]
    await asyncio.gather(*(stop(session_id) for session_id in idle))


def _fail_lost(session: Session, session_id: str) -> None:
    row = session.get(WorkerSession, session_id)
    if row is None or row.status != SessionStatus.READY:
        return
    error = {
        "code": WORKSPACE_LOST,
        "message": "the session's workspace (its volume) is gone, so its harness cannot come "
        "back; start a new session",
    }
    row = transition_session(session, row, SessionStatus.FAILED, error=error)
    lifecycle_events.session_ended(session, row, EndReason.FAILED)
    logger.warning("a ready session lost its workspace", extra={"session_id": session_id})


# -- orphans -----------------------------------------------------------------------------------


def _owning(session: Session, session_ids: list[str]) -> set[str]:
    """Those of `session_ids` that may have a harness running: the rest's are orphans."""
    live = (SessionStatus.PROVISIONING, SessionStatus.READY, SessionStatus.ENDING)
    statement = select(WorkerSession.id).where(
        WorkerSession.id.in_(session_ids), WorkerSession.status.in_(live)
    )
    return set(session.scalars(statement))


async def _still_owned(session_ids: Collection[str]) -> set[str]:
    return await db(_owning, list(session_ids))


async def _orphans(report: Report) -> None:
    try:
        report.harnesses_stopped.extend(await backend().sweep(_still_owned))
    except RuntimeBackendError as exc:
        logger.warning("could not stop orphaned harnesses", extra={"error": str(exc)})


def _volume_owners(session: Session, session_ids: list[str]) -> set[str]:
    """Those of `session_ids` whose session may still need its volume: any row not ended (a
    failed session keeps its workspace, so ending it again can retry the push)."""
    statement = select(WorkerSession.id).where(
        WorkerSession.id.in_(session_ids), WorkerSession.status != SessionStatus.ENDED
    )
    return set(session.scalars(statement))


async def _orphan_volumes(report: Report) -> None:
    runtime = backend()
    if not isinstance(runtime, VolumeKeeper):
        return
    try:
        # Listed before the rows are read: a session whose volume is on the list already has
        # its row (created before its provision), so a session starting now is never taken
        # for an orphan.
        found = await runtime.volumes()
        if not found:
            return
        orphans = set(found) - await db(_volume_owners, list(found))
        report.volumes_removed.extend(await runtime.remove_volumes(orphans))
    except RuntimeBackendError as exc:
        logger.warning("could not remove orphaned volumes", extra={"error": str(exc)})


def _runtime_shapes(session: Session) -> set[PoolShape]:
    # Only what a shape reads: the reconciler asks on every tick.
    only = load_only(Runtime.image, Runtime.limits)
    return {runtime_shape(runtime) for runtime in session.scalars(select(Runtime).options(only))}


async def _warm_pools(report: Report) -> None:
    """Fill the warm pools of the runtimes there are, where the backend keeps them in the
    cluster (`ServicePooling`); those of runtimes gone, or changed, are removed."""
    runtime = backend()
    if not isinstance(runtime, ServicePooling):
        return
    try:
        report.warm_members_made = await runtime.fill_pools(await db(_runtime_shapes))
    except RuntimeBackendError as exc:
        logger.warning("could not fill the warm pools", extra={"error": str(exc)})


def _forget_processed_events(session: Session, now: datetime) -> int:
    """Delete the source + id of events handled longer ago than the retention, so the table
    does not grow forever; a redelivery after that is still harmless (idempotent by state)."""
    before = now - timedelta(seconds=settings().processed_events_retention_s)
    statement = delete(ProcessedEvent).where(ProcessedEvent.processed_at < before)
    return int(session.execute(statement).rowcount or 0)  # type: ignore[attr-defined]


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
