"""What a page of sessions has done (`functions.session_activity.activity_of`), summed in the
database from the sessions' jobs and telemetry rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import (
    Session,
    sessionmaker,
)

from functions.db.engine import transaction
from functions.db.models import Job, TelemetryRequest, WorkerSession
from functions.session_activity import activity_of
from tests.db import factories

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def _telemetry(job: Job, **fields: object) -> TelemetryRequest:
    return TelemetryRequest(
        job_id=job.id,
        session_id=job.session_id,
        worker_id="w",
        runtime_id="r",
        cli="claude",
        status="succeeded",
        **fields,
    )


def _job(db: Session, on: WorkerSession, started: datetime, ended: datetime | None = None) -> Job:
    row = factories.job(db, on)
    row.created_at, row.finished_at = started, ended
    if ended is not None:
        row.status = "succeeded"
    return row


def test_jobs_tokens_cost_and_last_activity_per_session(factory: sessionmaker[Session]) -> None:
    with transaction(factory) as db:
        owner = factories.worker(db)
        busy = factories.session(db, owner)
        idle = factories.session(db, owner)
        other = factories.session(db, owner)
        first = _job(db, busy, T0, T0 + timedelta(seconds=30))
        _job(db, busy, T0 + timedelta(minutes=5))  # still running
        priced = _job(db, other, T0, T0 + timedelta(hours=1))
        db.flush()
        db.add(
            _telemetry(
                first,
                input_tokens=100,
                cache_read_tokens=5,
                output_tokens=12,
                reasoning_tokens=3,
                cost_usd=0.25,
                cost_source="reported",
            )
        )
        db.add(_telemetry(priced, input_tokens=1, output_tokens=2))  # no cost known
        ids = [busy.id, idle.id, other.id]
    with transaction(factory) as db:
        found = activity_of(db, ids)
    assert found[busy.id]["jobs"] == 2
    # The newest of the jobs' starts and ends: the running job started after the first ended.
    assert datetime.fromisoformat(found[busy.id]["last_activity_at"]) == T0 + timedelta(minutes=5)
    assert found[busy.id]["tokens"] == {
        "input": 100,
        "cache_read": 5,
        "cache_write": 0,
        "output": 12,
        "reasoning": 3,
    }
    assert found[busy.id]["cost_usd"] == 0.25
    assert found[idle.id] == {
        "jobs": 0,
        "last_activity_at": None,
        "tokens": {"input": 0, "cache_read": 0, "cache_write": 0, "output": 0, "reasoning": 0},
        "cost_usd": None,
    }
    assert found[other.id]["cost_usd"] is None  # a job without a price is not a $0 job
    assert datetime.fromisoformat(found[other.id]["last_activity_at"]) == T0 + timedelta(hours=1)
    assert activity_of(db, []) == {}
