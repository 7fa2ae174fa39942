"""The database itself refuses bad data: statements here go past the repositories and transitions
(Core statements or plain ORM inserts), so only CHECK, UNIQUE, FOREIGN KEY constraints and the
partial unique index can stop them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import Executable, Table, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from functions.db.engine import transaction
from functions.db.models import (
    ApiKey,
    Base,
    Job,
    Learning,
    Runtime,
    TelemetryRequest,
    Worker,
    WorkerSession,
)
from tests.db import factories

Factory = sessionmaker[Session]


def _table(model: type[Base]) -> Table:
    return Base.metadata.tables[f"{model.__table__.schema}.{model.__tablename__}"]


def _refused(factory: Factory, statement: Executable) -> None:
    """Core statements, not the ORM or the repositories: only the database can refuse them."""
    with pytest.raises(IntegrityError), transaction(factory) as db:
        db.execute(statement)


def _seed(factory: Factory) -> tuple[str, str]:
    """A ready session with one job; returns their ids."""
    with transaction(factory) as db:
        session = factories.session(db)
        job = factories.job(db, session)
        return session.id, job.id


@pytest.mark.parametrize(
    ("model", "column", "value"),
    [
        (WorkerSession, "status", "paused"),
        (Job, "status", "done"),
        (Job, "mode", "batch"),
        (Job, "kind", "chat"),
    ],
)
def test_unknown_status_or_kind_is_refused(
    factory: Factory, model: type[WorkerSession] | type[Job], column: str, value: str
) -> None:
    session_id, job_id = _seed(factory)
    table = _table(model)
    row_id = session_id if model is WorkerSession else job_id
    _refused(factory, update(table).where(table.c.id == row_id).values({column: value}))


def test_unknown_cli_and_scope_are_refused(factory: Factory) -> None:
    with transaction(factory) as db:
        runtime = factories.runtime(db)
    runtimes = _table(Runtime)
    _refused(factory, update(runtimes).where(runtimes.c.id == runtime.id).values(cli="cursor"))
    _refused(
        factory,
        insert(_table(ApiKey)).values(
            id="k1", name="ops", scope="root", secret_hash="x", created_at=datetime.now(UTC)
        ),
    )


def _request(job_id: str, **fields: object) -> TelemetryRequest:
    base: dict[str, object] = {
        "job_id": job_id,
        "session_id": "s",
        "worker_id": "w",
        "runtime_id": "r",
        "cli": "claude",
        "status": "succeeded",
    }
    return TelemetryRequest(**{**base, **fields})


@pytest.mark.parametrize(
    "fields",
    [
        {"input_tokens": -1},
        {"reasoning_tokens": -5},
        {"total_ms": -1},
        {"cost_usd": -0.01, "cost_source": "reported"},
        {"cost_usd": 0.5},  # a cost must say where it came from
        {"cost_source": "estimated"},
        {"cost_usd": 0.5, "cost_source": "guessed"},
        {"status": "running"},  # telemetry is only for finished jobs
    ],
)
def test_bad_telemetry_is_refused(factory: Factory, fields: dict[str, object]) -> None:
    _, job_id = _seed(factory)
    with pytest.raises(IntegrityError), transaction(factory) as db:
        db.add(_request(job_id, **fields))


def test_negative_learning_tokens_are_refused(factory: Factory) -> None:
    values = {"id": "l1", "session_id": "s", "worker_id": "w", "summary": "", "files_changed": []}
    now = datetime.now(UTC)
    _refused(
        factory,
        insert(_table(Learning)).values(**values, input_tokens=1, output_tokens=-1, created_at=now),
    )


def test_duplicate_names_are_refused(factory: Factory) -> None:
    with transaction(factory) as db:
        worker = factories.worker(db, "reviewer")
    with pytest.raises(IntegrityError), transaction(factory) as db:
        db.add(Runtime(name="rt-reviewer", cli="codex", cli_version="1"))
    with pytest.raises(IntegrityError), transaction(factory) as db:
        db.add(Worker(name="reviewer", runtime_id=worker.runtime_id, repo_url="x"))


def test_foreign_keys_are_enforced(factory: Factory) -> None:
    with pytest.raises(IntegrityError), transaction(factory) as db:
        db.add(Worker(name="orphan", runtime_id="no-such-runtime", repo_url="x"))
    with pytest.raises(IntegrityError), transaction(factory) as db:
        db.add(_request("no-such-job"))


def test_jobs_waiting_for_their_turn_sit_beside_the_running_one(factory: Factory) -> None:
    """Prompt requests queue on a busy session (the harness gives them their turns), so the
    database allows several active jobs; `start_job` refuses sync and stream prompts."""
    session_id, _ = _seed(factory)  # one queued job already
    with transaction(factory) as db:
        db.add(Job(session_id=session_id, prompt="again", mode="async", status="running"))
        db.add(Job(session_id=session_id, prompt="later", mode="async", status="queued"))
        for status in ("succeeded", "failed", "cancelled", "timeout"):
            db.add(Job(session_id=session_id, prompt="old", mode="sync", status=status))


def test_idempotency_keys_are_unique_per_session(factory: Factory) -> None:
    with transaction(factory) as db:
        first = factories.session(db)
        second = factories.session(db, factories.worker(db, "writer"))
        for session in (first, second):  # the same key on two sessions is fine
            db.add(Job(session_id=session.id, prompt="p", mode="sync", idempotency_key="k"))
        # ... and jobs without a key are not duplicates of each other
        for status in ("succeeded", "failed"):
            db.add(Job(session_id=first.id, prompt="p", mode="sync", status=status))
    with pytest.raises(IntegrityError), transaction(factory) as db:
        db.add(
            Job(session_id=first.id, prompt="p", mode="sync", status="failed", idempotency_key="k")
        )


def test_timestamps_come_back_aware_and_in_utc(factory: Factory) -> None:
    plus_two = timezone(timedelta(hours=2))
    moment = datetime(2025, 3, 1, 14, 30, 5, 123456, tzinfo=plus_two)
    with transaction(factory) as db:
        session = factories.session(db)
        session.last_activity_at = moment
    with transaction(factory) as db:
        stored = db.scalar(select(WorkerSession.last_activity_at))
    assert stored == moment
    assert stored is not None and stored.utcoffset() == timedelta(0)
    assert stored.hour == 12


def test_naive_timestamps_are_refused_before_reaching_the_database(factory: Factory) -> None:
    with pytest.raises(Exception, match="naive datetime"), transaction(factory) as db:
        session = factories.session(db)
        session.last_activity_at = datetime(2025, 1, 1)
        db.flush()


def test_json_none_is_sql_null(factory: Factory) -> None:
    with transaction(factory) as db:
        factories.runtime(db, prices=None)
        stored = db.scalar(select(Runtime.id).where(Runtime.prices.is_(None)))
    assert stored is not None
