"""What a page of sessions has done: jobs, last activity, tokens and cost, per session.

Two grouped queries for the whole page (its jobs, its telemetry rows), never one per session, so a
list shows what a console or `vwm session list` needs without a telemetry call per row.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from functions.db.models import Job, TelemetryRequest


class SessionTokens(BaseModel):
    input: int = 0
    cache_read: int = 0
    cache_write: int = 0
    output: int = 0
    reasoning: int = 0


class SessionActivity(BaseModel):
    jobs: int = 0
    # The newest job's start or end, whichever is later; null: no job yet.
    last_activity_at: datetime | None = None
    tokens: SessionTokens = SessionTokens()
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
    T = TelemetryRequest
    usage = select(
        T.session_id,
        func.sum(T.input_tokens),
        func.sum(T.cache_read_tokens),
        func.sum(T.cache_write_tokens),
        func.sum(T.output_tokens),
        func.sum(T.reasoning_tokens),
        func.sum(T.cost_usd),
    ).where(T.session_id.in_(session_ids))
    for sid, i, cr, cw, o, r, cost in db.execute(usage.group_by(T.session_id)):
        found[sid].tokens = SessionTokens(
            input=i or 0, cache_read=cr or 0, cache_write=cw or 0, output=o or 0, reasoning=r or 0
        )
        found[sid].cost_usd = float(cost) if cost is not None else None
    return {sid: item.model_dump(mode="json") for sid, item in found.items()}


def latest(*times: datetime | None) -> datetime | None:
    present = [t for t in times if t is not None]
    return max(present) if present else None
