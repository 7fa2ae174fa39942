"""Every status change of a session or a job goes through here, as a guarded UPDATE: the row
changes only if its status, at that instant, is one the target may be reached from. Two writers
racing for the same change cannot both win; the loser gets `InvalidTransition`.

Called by the control plane's services inside their transaction; nothing here commits.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from functions.db.columns import utcnow
from functions.db.errors import (
    IdempotencyKeyReused,
    InvalidTransition,
    NotFoundError,
    SessionBusy,
    SessionEnded,
)
from functions.db.models import (
    ACTIVE_JOB_STATUSES,
    FINISHED_JOB_STATUSES,
    Job,
    JobKind,
    JobMode,
    JobStatus,
    SessionStatus,
    WorkerSession,
)

S = SessionStatus
SESSION_TRANSITIONS: Mapping[SessionStatus, frozenset[SessionStatus]] = {
    S.PROVISIONING: frozenset({S.READY, S.FAILED, S.ENDING}),
    S.READY: frozenset({S.ENDING, S.FAILED}),
    S.ENDING: frozenset({S.ENDED, S.FAILED}),
    S.ENDED: frozenset(),  # final: takes no prompts, changes no more
    S.FAILED: frozenset({S.ENDING}),  # a failed session can still be ended, to clean up
}

J = JobStatus
JOB_TRANSITIONS: Mapping[JobStatus, frozenset[JobStatus]] = {
    J.QUEUED: frozenset({J.RUNNING, J.CANCELLED, J.FAILED}),
    J.RUNNING: frozenset({J.SUCCEEDED, J.FAILED, J.CANCELLED, J.TIMEOUT}),
    **{finished: frozenset() for finished in FINISHED_JOB_STATUSES},  # a job finishes once
}

# Which session statuses accept a new job of each kind. A prompt may queue while the session is
# still provisioning; the learning run happens while the session is ending.
SESSION_ACCEPTS_JOB: Mapping[JobKind, frozenset[SessionStatus]] = {
    JobKind.PROMPT: frozenset({S.PROVISIONING, S.READY}),
    JobKind.LEARNING: frozenset({S.READY, S.ENDING}),
}

Row = TypeVar("Row", WorkerSession, Job)


def sources(machine: Mapping[Any, frozenset[Any]], target: str) -> frozenset[str]:
    """The statuses `target` may be reached from."""
    return frozenset(source for source, targets in machine.items() if target in targets)


def transition_session(
    db: Session, session: WorkerSession, to: SessionStatus | str, **fields: Any
) -> WorkerSession:
    """Move a session to `to`, setting `fields` in the same UPDATE. Stamps `ready_at` (and
    `last_activity_at`) on ready, `last_activity_at` on ending and `ended_at` on ended unless
    given. Returns the stored row."""
    to = SessionStatus(to)
    now = utcnow()
    if to is S.READY:
        fields.setdefault("ready_at", now)
        fields.setdefault("last_activity_at", now)
    elif to is S.ENDING:
        # When the end began: the reconciler carries on an end left `ending` past its bound.
        fields.setdefault("last_activity_at", now)
    elif to is S.ENDED:
        fields.setdefault("ended_at", now)
    return _transition(db, session, SESSION_TRANSITIONS, to, fields)


def transition_job(db: Session, job: Job, to: JobStatus | str, **fields: Any) -> Job:
    """Move a job to `to`, setting `fields` in the same UPDATE. Stamps `started_at` on running
    and `finished_at` on any finished status unless given. Returns the stored row."""
    to = JobStatus(to)
    if to is J.RUNNING:
        fields.setdefault("started_at", utcnow())
    elif to in FINISHED_JOB_STATUSES:
        fields.setdefault("finished_at", utcnow())
    return _transition(db, job, JOB_TRANSITIONS, to, fields)


def _transition(
    db: Session,
    row: Row,
    machine: Mapping[Any, frozenset[Any]],
    to: str,
    fields: dict[str, Any],
) -> Row:
    model = type(row)
    kind = "session" if model is WorkerSession else "job"
    allowed = sources(machine, to)
    statement = (
        update(model)
        .where(model.id == row.id, model.status.in_(allowed))
        .values(status=to, **fields)
        .execution_options(synchronize_session=False)
    )
    if db.execute(statement).rowcount != 1:  # type: ignore[attr-defined]
        current = db.scalar(select(model.status).where(model.id == row.id))
        if current is None:
            raise NotFoundError(kind, row.id)
        raise InvalidTransition(kind, row.id, current, to)
    fresh = db.get(model, row.id, populate_existing=True)
    assert fresh is not None  # we just updated it, inside this transaction
    return fresh


@dataclass(frozen=True)
class StartedJob:
    job: Job
    created: bool  # False: the idempotency key matched an existing job, which is returned


def start_job(
    db: Session,
    session_id: str,
    *,
    prompt: str,
    mode: JobMode | str,
    kind: JobKind | str = JobKind.PROMPT,
    idempotency_key: str | None = None,
    timeout_s: int | None = None,
    request: PromptRequest | None = None,
) -> StartedJob:
    """Queue a job on a session, or return the job an earlier call with the same idempotency key
    (or the same prompt request) queued. Raises `SessionEnded` when the session takes no jobs of
    this kind, `NotFoundError` when there is no such session, and `SessionBusy` when it already
    has a queued or running job, unless the job is a prompt `request`'s: those wait for their
    turn on the harness. The busy check runs under the session row's lock, so concurrent
    callers cannot both pass it."""
    kind = JobKind(kind)
    if request is not None and (existing := db.get(Job, request.job_id)) is not None:
        return StartedJob(existing, created=False)
    if idempotency_key is not None and (existing := _job_with_key(db, session_id, idempotency_key)):
        return _replay(existing, prompt, kind)

    session = db.scalar(
        select(WorkerSession).where(WorkerSession.id == session_id).with_for_update()
    )
    if session is None:
        raise NotFoundError("session", session_id)
    if session.status not in SESSION_ACCEPTS_JOB[kind]:
        raise SessionEnded(session_id, session.status)
    if idempotency_key is not None and (existing := _job_with_key(db, session_id, idempotency_key)):
        return _replay(existing, prompt, kind)  # queued by a caller we waited for at the lock
    if request is None and (active := _active_job(db, session_id)) is not None:
        raise SessionBusy(session_id, active)

    job = Job(
        session_id=session_id,
        kind=kind,
        prompt=prompt,
        mode=JobMode(mode),
        status=J.QUEUED,
        idempotency_key=idempotency_key,
        timeout_s=timeout_s,
    )
    if request is not None:
        job.id = request.job_id
        job.causation_id = request.causation_id
        job.reply_to = request.reply_to
    try:
        with db.begin_nested():
            db.add(job)
    except IntegrityError:
        if request is not None and (existing := db.get(Job, request.job_id)) is not None:
            return StartedJob(existing, created=False)
        if idempotency_key is not None and (
            existing := _job_with_key(db, session_id, idempotency_key)
        ):
            return _replay(existing, prompt, kind)
        raise
    session.last_activity_at = utcnow()
    return StartedJob(job, created=True)


@dataclass(frozen=True)
class PromptRequest:
    """What names a job asked for by a `dev.vwm.prompt.requested` event: its derived id, the
    event's id (`causationid`) and where its end is also sent."""

    job_id: str
    causation_id: str
    reply_to: str | None = None


def _active_job(db: Session, session_id: str) -> str | None:
    return db.scalar(
        select(Job.id)
        .where(Job.session_id == session_id, Job.status.in_(ACTIVE_JOB_STATUSES))
        .order_by(Job.created_at)
        .limit(1)
    )


def _job_with_key(db: Session, session_id: str, idempotency_key: str) -> Job | None:
    return db.scalar(
        select(Job).where(Job.session_id == session_id, Job.idempotency_key == idempotency_key)
    )


def _replay(existing: Job, prompt: str, kind: JobKind) -> StartedJob:
    if existing.prompt != prompt or existing.kind != kind:
        raise IdempotencyKeyReused(existing.session_id, existing.idempotency_key or "", existing.id)
    return StartedJob(existing, created=False)
