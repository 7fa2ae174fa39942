"""The control plane's own events about a session's life: `dev.vwm.session.created`,
`dev.vwm.session.ready` and `dev.vwm.session.ended`.

Each is written to the database outbox (`functions.broker.outbox.add`) in the transaction that
makes the change it reports, so a subscriber hears of every change that committed and of no
change that rolled back, whichever process dies when. In `vwm up` the broker takes them from the
outbox; in production a relay sends them to the Knative Broker (docs/events.md, "Publishing").
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy.orm import Session

from eventing.events import (
    CONTROL_PLANE_SOURCE,
    EndReason,
    ErrorInfo,
    SessionCreated,
    SessionEnded,
    SessionReady,
    new_event,
)
from functions.broker.outbox import add
from functions.db.models import SessionStatus, WorkerSession


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
        error=_error(row.error) if status == "failed" else None,
        ended_at=_aware(row.ended_at or datetime.now(UTC)),
    )
    _add(db, payload, row.id)


def _add(db: Session, payload: Any, session_id: str) -> None:
    add(db, new_event(payload, source=CONTROL_PLANE_SOURCE, session_id=session_id))


def _error(error: dict[str, Any] | None) -> ErrorInfo:
    error = error or {}
    details = error.get("details")
    return ErrorInfo(
        code=str(error.get("code") or "session_failed")[:100],
        message=str(error.get("message") or "the session failed")[:8192],
        details=details if isinstance(details, dict) else {},
    )


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
