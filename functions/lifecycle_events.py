"""The control plane's own events about a session's life: `dev.vwm.session.created`,
`dev.vwm.session.ready` and `dev.vwm.session.ended`; and `dev.vwm.job.failed` for a job the
control plane failed itself (it never reached a harness, or its harness was lost), so a sender
waiting for the job's end hears of it as of any other.

Each is written to the database outbox (`functions.broker.outbox.add`) in the transaction that
makes the change it reports, so a subscriber hears of every change that committed and of no
change that rolled back, whichever process dies when. In `vwm up` the broker takes them from the
outbox; in production a relay sends them to the Knative Broker (docs/events.md, "Publishing").
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from eventing.events import (
    CONTROL_PLANE_SOURCE,
    EndReason,
    ErrorInfo,
    JobFailed,
    JobSummary,
    JobTimings,
    SessionCreated,
    SessionEnded,
    SessionReady,
    VwmEvent,
    new_event,
)
from eventing.job_events import JobStatus
from functions.broker.outbox import add
from functions.db.models import Job, JobEventRecord, SessionStatus, WorkerSession


def session_created(db: Session, row: WorkerSession) -> None:
    """Its harness is being provisioned (its workspace is known)."""
    payload = SessionCreated(
        worker_id=row.worker_id,
        workspace=row.workspace or "(not provisioned)",
        session_repo_url=row.session_repo_url,
        session_repo_branch=row.session_repo_branch,
        created_at=_aware(row.created_at),
    )
    _add(db, payload, row.id)


def session_ready(db: Session, row: WorkerSession) -> None:
    payload = SessionReady(
        worker_id=row.worker_id,
        endpoint=row.endpoint or "(unknown)",
        cli_session_id=row.cli_session_id,
        ready_at=_aware(row.ready_at or datetime.now(UTC)),
    )
    _add(db, payload, row.id)


def session_ended(db: Session, row: WorkerSession, reason: EndReason) -> None:
    """The session is `ended`, or `failed` for good (its start failed, or its work could not be
    saved: ending it again retries and publishes again)."""
    status: Literal["ended", "failed"] = "ended" if row.status == SessionStatus.ENDED else "failed"
    payload = SessionEnded(
        status=status,
        reason=reason,
        result=row.result,
        error=error_info(row.error) if status == "failed" else None,
        ended_at=_aware(row.ended_at or datetime.now(UTC)),
    )
    _add(db, payload, row.id)


def job_failed(db: Session, row: Job) -> None:
    """A job the control plane ended without success (`row`, already in its final status):
    its `seq` is the one after the last entry of the job's log stored here, so it closes the
    job for a subscriber that counts."""
    last = db.scalar(select(func.max(JobEventRecord.seq)).where(JobEventRecord.job_id == row.id))
    status = JobStatus(row.status)
    add(
        db,
        job_failed_event(
            row.session_id,
            row.id,
            row.causation_id,
            row.error or {},
            status=status if status is not JobStatus.SUCCEEDED else JobStatus.FAILED,
            seq=(last or 0) + 1,
            started_at=_aware(row.started_at or row.created_at),
        ),
    )


def job_failed_event(
    session_id: str,
    job_id: str,
    causation_id: str | None,
    error: dict[str, Any],
    *,
    status: JobStatus = JobStatus.FAILED,
    seq: int = 1,
    started_at: datetime | None = None,
) -> VwmEvent:
    """`dev.vwm.job.failed` from the control plane (its id: the job's, then ``.control``)."""
    now = datetime.now(UTC)
    info = error_info(error, default_code="job_failed")
    payload = JobFailed(
        status=status,  # type: ignore[arg-type]  # never SUCCEEDED (the caller's guard)
        summary=JobSummary(is_error=True, error=info.message),
        error=info,
        started_at=started_at or now,
        finished_at=now,
        timings=JobTimings(total_ms=0),
    )
    return new_event(
        payload,
        source=CONTROL_PLANE_SOURCE,
        session_id=session_id,
        job_id=job_id,
        seq=seq,
        causation_id=causation_id,
        event_id=f"{job_id}.control",
        time=now,
    )


def _add(db: Session, payload: Any, session_id: str) -> None:
    add(db, new_event(payload, source=CONTROL_PLANE_SOURCE, session_id=session_id))


def error_info(error: dict[str, Any] | None, default_code: str = "session_failed") -> ErrorInfo:
    error = error or {}
    details = error.get("details")
    return ErrorInfo(
        code=str(error.get("code") or default_code)[:100],
        message=str(error.get("message") or default_code.replace("_", " "))[:8192],
        details=details if isinstance(details, dict) else {},
    )


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
