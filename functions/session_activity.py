"""What a page of sessions has done: jobs, last activity, tokens and cost, per session.

Two grouped queries for the whole page (its jobs, its telemetry rows), never one per session, so a
list shows what a console or `vwm session list` needs without a telemetry call per row.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from eventing.lazy_models import LazyModel
from functions.db.models import Job, TelemetryRequest
from functions.usage_totals import usage_columns, usage_totals


class SessionTokens(LazyModel):
    input: int = 0
    cache_read: int = 0
    cache_write: int = 0
    output: int = 0
    reasoning: int = 0


class SessionActivity(LazyModel):
    jobs: int = 0
    # The newest job's start or end, whichever is later; null: no job yet.
    last_activity_at: datetime | None = None
    # A factory, not an instance: an instance here would build the model at import.
    tokens: SessionTokens = Field(default_factory=SessionTokens)
    # The sum of the recorded jobs' costs; null when none of them has a known cost.
    cost_usd: float | None = None


def activity_of(db: Session, session_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """`SessionActivity` (as JSON) of each of `session_ids`; a session with no jobs has zeros."""
    if not session_ids:
        return {}
    found = {sid: SessionActivity() for sid in session_ids}
    jobs = select(
        Job.session_id,
        func.count(Job.id),
        func.max(func.coalesce(Job.finished_at, Job.created_at)),
        func.max(Job.created_at),
    ).where(Job.session_id.in_(session_ids))
    for sid, count, last_end, last_start in db.execute(jobs.group_by(Job.session_id)):
        found[sid].jobs = count
        found[sid].last_activity_at = latest(last_end, last_start)
    usage = select(TelemetryRequest.session_id, *usage_columns()).where(
        TelemetryRequest.session_id.in_(session_ids)
    )
    for sid, *totals in db.execute(usage.group_by(TelemetryRequest.session_id)):
        recorded = usage_totals(*totals)  # its job count is of recorded jobs: the jobs' is kept
        found[sid].tokens = SessionTokens(**recorded["tokens"])
        found[sid].cost_usd = recorded["cost_usd"]
    return {sid: item.model_dump(mode="json") for sid, item in found.items()}


def latest(*times: datetime | None) -> datetime | None:
    present = [t for t in times if t is not None]
    return max(present) if present else None
