"""A job's telemetry says what really ran: the model its CLI reported (else the one asked for),
the CLI version its harness resolved, and the worker revision the job was dispatched with;
whichever way the job's end is learned (its events, in any order, or its harness's log), and
shown by `GET /v1/telemetry/requests`."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from eventing.codec import to_binary
from eventing.events import (
    JobCompleted,
    JobStarted,
    JobSummary,
    JobTimings,
    TokenUsage,
    VwmEvent,
    harness_source,
    job_event_id,
    new_event,
)
from eventing.job_events import JobEvent
from functions.db.engine import make_engine, session_factory, transaction
from functions.db.models import Job, TelemetryRequest
from functions.job_log import record_log
from tests.db import factories
from tests.e2e.conftest import make_bare_repo
from tests.support.control_plane import ControlPlane, until
from vwm.local.clis import pinned_version

# Hours ahead: the module is imported when the suite starts, and this must still be after every
# job the tests queue, however late in a long run they come.
STARTED = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=3)
FINISHED = STARTED + timedelta(seconds=3)
LIMIT = 256 * 1024


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    plane = ControlPlane(tmp_path_factory.mktemp("provenance") / "data", {})
    plane.start()
    yield plane
    plane.stop()


@pytest.fixture(scope="module")
def database(plane: ControlPlane) -> Iterator[Callable[..., Any]]:
    engine = make_engine(f"sqlite:///{plane.data_dir / 'vwm.sqlite3'}")
    factory = session_factory(engine)

    def run(fn: Callable[..., Any], *args: Any) -> Any:
        with transaction(factory) as session:
            return fn(session, *args)

    yield run
    engine.dispose()


def new_job(session: Session, worker_revision: int | None) -> tuple[str, str]:
    """A job as dispatch leaves it: stamped with its worker's revision."""
    owner = factories.session(session)
    job = factories.job(session, owner, mode="async")
    job.worker_revision = worker_revision
    return owner.id, job.id


def telemetry(session: Session, job_id: str) -> dict[str, Any]:
    row = session.scalar(select(TelemetryRequest).where(TelemetryRequest.job_id == job_id))
    assert row is not None
    return {"model": row.model, "cli_version": row.cli_version, "revision": row.worker_revision}


def events(
    session_id: str, job_id: str, *, asked: str | None, reported: str | None
) -> tuple[VwmEvent, VwmEvent]:
    def event(payload: Any, seq: int) -> VwmEvent:
        return new_event(
            payload,
            source=harness_source(session_id),
            session_id=session_id,
            job_id=job_id,
            seq=seq,
            event_id=job_event_id(job_id, seq),
        )

    started = JobStarted(
        prompt="hello", cli="claude", model=asked, cli_version="2.1.197", started_at=STARTED
    )
    summary = JobSummary(final_text="done", usage=TokenUsage(input=3, output=2), model=reported)
    end = JobCompleted(
        summary=summary,
        exit_code=0,
        started_at=STARTED,
        finished_at=FINISHED,
        timings=JobTimings(total_ms=3000),
    )
    return event(started, 1), event(end, 2)


def deliver(plane: ControlPlane, *sent: VwmEvent) -> None:
    with plane.client() as client:
        for event in sent:
            headers, body = to_binary(event)
            answer = client.post("/v1/events", headers=headers, content=body)
            assert answer.status_code in (200, 202), answer.text


@pytest.mark.parametrize(
    ("asked", "reported", "model"),
    [
        (None, "claude-opus-4-8", "claude-opus-4-8"),  # nothing configured: the CLI's default
        ("claude-sonnet-4-5", "claude-sonnet-4-5-20250929", "claude-sonnet-4-5-20250929"),
        ("gpt-fake", None, "gpt-fake"),  # codex and opencode name none: the one asked for
    ],
)
@pytest.mark.parametrize("in_order", [True, False])
def test_the_events_record_the_model_that_ran_the_version_and_the_revision(
    plane: ControlPlane,
    database: Callable[..., Any],
    asked: str | None,
    reported: str | None,
    model: str,
    in_order: bool,
) -> None:
    session_id, job_id = database(new_job, 7)
    started, end = events(session_id, job_id, asked=asked, reported=reported)
    deliver(plane, *((started, end) if in_order else (end, started)))

    assert database(telemetry, job_id) == {"model": model, "cli_version": "2.1.197", "revision": 7}
    with plane.client() as client:
        records = client.get("/v1/telemetry/requests", params={"session_id": session_id})
    (record,) = records.json()["items"]
    assert (record["model"], record["cli_version"], record["worker_revision"]) == (
        model,
        "2.1.197",
        7,
    )


def test_a_job_without_a_revision_records_zero_and_an_unknown_version_null(
    plane: ControlPlane, database: Callable[..., Any]
) -> None:
    session_id, job_id = database(new_job, None)
    started, end = events(session_id, job_id, asked=None, reported=None)
    unversioned = started.model_copy(
        update={"data": started.data.model_copy(update={"cli_version": None})}
    )
    deliver(plane, unversioned, end)
    assert database(telemetry, job_id) == {"model": None, "cli_version": None, "revision": 0}


def test_the_harness_log_records_the_same(database: Callable[..., Any]) -> None:
    """The recorder's and the reconciler's way: the job's whole log as its harness keeps it."""
    _, job_id = database(new_job, 3)
    log = [
        JobEvent(
            job_id=job_id,
            seq=1,
            kind="job_started",
            data={"prompt": "hi", "cli": "gemini", "model": None, "cli_version": "0.61.0"},
            ts=STARTED.timestamp(),
        ),
        JobEvent(
            job_id=job_id,
            seq=2,
            kind="job_finished",
            data={
                "status": "succeeded",
                "summary": {"final_text": "hi", "model": "gemini-3.8-flash"},
                "duration_ms": 1000,
            },
            ts=FINISHED.timestamp(),
        ),
    ]
    database(record_log, job_id, log, "stdout", LIMIT)
    assert database(telemetry, job_id) == {
        "model": "gemini-3.8-flash",
        "cli_version": "0.61.0",
        "revision": 3,
    }
    assert database(lambda s: s.get(Job, job_id).status) == "succeeded"


@pytest.mark.cli
def test_a_real_cli_with_no_model_configured_records_the_model_it_ran(
    tmp_path: Path, control_plane: ControlPlane, fake_provider: Any
) -> None:
    """Claude Code on the fake provider, no model on the runtime, the worker or the prompt: the
    row names the model claude asked the provider for, and the version the runtime pins."""
    key = f"provenance-{uuid.uuid4().hex[:6]}"
    control_plane.env["FAKE_PROVIDER_KEY"] = key  # this test's calls, apart in the ledger
    control_plane.stop()
    control_plane.start()
    repo = make_bare_repo(tmp_path / "worker.git", {"README.md": "# knowledge\n"})
    with control_plane.client() as client:
        runtime = {
            "name": "bare",
            "cli": "claude",
            "cli_version": pinned_version("claude"),
            "provider_base_url": fake_provider.base_url + "/v1/",  # stored as the root
            "credential_ref": "FAKE_PROVIDER_KEY",
        }
        made = client.post("/v1/admin/runtimes", json=runtime)
        assert made.status_code == 201, made.text
        assert made.json()["default_model"] is None
        assert made.json()["provider_base_url"] == fake_provider.base_url
        worker = {"name": "w", "runtime": "bare", "repo_url": str(repo)}
        client.post("/v1/admin/workers", json=worker).raise_for_status()
        created = client.post("/v1/sessions", json={"worker": "w"})
        assert created.status_code == 201, (created.text, control_plane.log())
        session_id = created.json()["id"]
        job = client.post("/v1/prompts", json={"session_id": session_id, "prompt": "say hi"})
        assert job.json()["status"] == "succeeded", job.text

        def recorded() -> list[dict[str, Any]]:
            answer = client.get("/v1/telemetry/requests", params={"session_id": session_id})
            return list(answer.json()["items"])

        (record,) = until(recorded, control_plane)

    asked = {entry.model for entry in fake_provider.ledger.model_calls(key=key)}
    assert record["model"] is not None
    assert record["model"] in asked  # the provider's answer names the model it was asked for
    assert job.json()["result"]["model"] == record["model"]
    assert record["cli_version"] == pinned_version("claude")
    engine = make_engine(f"sqlite:///{control_plane.data_dir / 'vwm.sqlite3'}")
    try:
        with transaction(session_factory(engine)) as session:
            stamped = session.get(Job, record["job_id"]).worker_revision  # type: ignore[union-attr]
    finally:
        engine.dispose()
    assert record["worker_revision"] == (stamped or 0)
