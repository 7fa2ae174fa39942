"""The `events` function as `vwm up` serves it (`POST /v1/events`): job events write a job's row,
telemetry and stored log, whatever order and however often they arrive; malformed events are
refused with nothing written; a session's end can be requested by event."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from eventing.agent_events import EventKind
from eventing.codec import to_binary, to_structured
from eventing.events import (
    CONTROL_PLANE_SOURCE,
    ErrorInfo,
    JobCompleted,
    JobFailed,
    JobOutput,
    JobStarted,
    JobSummary,
    JobTimings,
    LearningCompleted,
    OutputEvent,
    SessionEndRequested,
    TokenUsage,
    VwmEvent,
    harness_source,
    job_event_id,
    new_event,
)
from eventing.job_events import JobStatus
from functions.db.api_keys import ApiKeys
from functions.db.engine import make_engine, session_factory, transaction
from functions.db.models import Job, JobEventRecord, ProcessedEvent, TelemetryRequest, WorkerSession
from tests.db import factories
from tests.support.control_plane import ControlPlane

# After the jobs are queued, so each job's queued time is its creation to this start.
# Hours ahead: the module is imported when the suite starts, and this must still be after every
# job the tests queue, however late in a long run they come.
STARTED = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=3)
FINISHED = STARTED + timedelta(seconds=9)


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    data_dir = tmp_path_factory.mktemp("events") / "data"
    plane = ControlPlane(data_dir, {})
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


def _new_job(session: Session) -> tuple[str, str]:
    owner = factories.session(session)
    return owner.id, factories.job(session, owner, mode="async").id


def _job_events(session_id: str, job_id: str, *, failed: bool = False) -> dict[str, VwmEvent]:
    """A job's events as its harness publishes them: started (seq 1), two output batches
    (2..3, 4..5), the end (6)."""
    source = harness_source(session_id)

    def event(payload: Any, seq: int) -> VwmEvent:
        return new_event(
            payload,
            source=source,
            session_id=session_id,
            job_id=job_id,
            seq=seq,
            event_id=job_event_id(job_id, seq),
        )

    def output(first: int, texts: list[str]) -> JobOutput:
        events = [
            OutputEvent(
                kind=EventKind.ASSISTANT_TEXT, data={"text": text}, seq=first + i, ts=100.0 + i
            )
            for i, text in enumerate(texts)
        ]
        return JobOutput(first_seq=first, last_seq=first + len(texts) - 1, events=events)

    summary = JobSummary(
        cli_session_id="cli-123",
        final_text="done",
        usage=TokenUsage(input=10, output=5),
        cost_usd=0.25,
        cost_source="reported",
    )
    timings = JobTimings(cli_start_ms=120, first_output_ms=340, total_ms=9000)
    common: dict[str, Any] = dict(
        summary=summary,
        exit_code=1 if failed else 0,
        started_at=STARTED,
        finished_at=FINISHED,
        timings=timings,
        raw_output="stdout of the CLI",
    )
    end = (
        JobFailed(
            status=JobStatus.FAILED,
            error=ErrorInfo(code="cli_failed", message="it broke"),
            **common,
        )
        if failed
        else JobCompleted(**common)
    )
    started = JobStarted(prompt="hello", cli="claude", model="m-1", started_at=STARTED)
    return {
        "started": event(started, 1),
        "output1": event(output(2, ["a", "b"]), 3),
        "output2": event(output(4, ["c", "d"]), 5),
        "end": event(end, 6),
    }


def _post(client: httpx.Client, event: VwmEvent, structured: bool = False) -> httpx.Response:
    headers, body = (to_structured if structured else to_binary)(event)
    return client.post("/v1/events", headers=headers, content=body)


def _state(session: Session, job_id: str) -> dict[str, Any]:
    """What the events wrote for a job, with its own id and creation time taken out."""
    job = session.get(Job, job_id)
    assert job is not None
    telemetry = session.scalar(select(TelemetryRequest).where(TelemetryRequest.job_id == job_id))
    stored = session.scalars(
        select(JobEventRecord).where(JobEventRecord.job_id == job_id).order_by(JobEventRecord.seq)
    )
    owner = session.get(WorkerSession, job.session_id)
    assert owner is not None
    state: dict[str, Any] = {
        "job": {
            name: getattr(job, name)
            for name in ("status", "result", "error", "started_at", "finished_at")
        },
        "cli_session_id": owner.cli_session_id,
        "events": [(r.seq, r.kind, r.data, r.ts) for r in stored],
        "telemetry": None,
    }
    if telemetry is not None:
        row = {
            column.name: getattr(telemetry, column.name)
            for column in TelemetryRequest.__table__.columns
            if column.name not in ("id", "job_id", "session_id", "worker_id", "runtime_id")
            and column.name not in ("created_at", "queued_ms")
        }
        row["event_log"] = row["event_log"].replace(job_id, "JOB")
        # Queued from its creation to the start the harness reported.
        assert telemetry.queued_ms == int((STARTED - job.created_at).total_seconds() * 1000)
        state["telemetry"] = row
    return state


def _deliver(plane: ControlPlane, events: list[VwmEvent]) -> list[int]:
    with plane.client() as client:
        return [
            _post(client, event, structured=i % 2 == 1).status_code
            for i, event in enumerate(events)
        ]


@pytest.mark.parametrize("failed", [False, True])
def test_duplicated_and_reordered_job_events_write_what_in_order_delivery_writes(
    plane: ControlPlane, database: Callable[..., Any], failed: bool
) -> None:
    clean_session, clean_job = database(_new_job)
    e = _job_events(clean_session, clean_job, failed=failed)
    assert _deliver(plane, [e["started"], e["output1"], e["output2"], e["end"]]) == [202] * 4
    clean = database(_state, clean_job)

    messy_session, messy_job = database(_new_job)
    m = _job_events(messy_session, messy_job, failed=failed)
    # Output before the start, the end before the last batch, everything twice.
    order = ["output1", "end", "output1", "started", "end", "output2", "started", "output2"]
    statuses = _deliver(plane, [m[name] for name in order])
    assert statuses == [202, 202, 200, 202, 200, 202, 200, 200]
    messy = database(_state, messy_job)

    assert messy == clean
    assert clean["job"]["status"] == ("failed" if failed else "succeeded")
    assert clean["job"]["started_at"] == STARTED and clean["job"]["finished_at"] == FINISHED
    assert [seq for seq, *_ in clean["events"]] == [1, 2, 3, 4, 5, 6]
    assert clean["cli_session_id"] == "cli-123"
    telemetry = clean["telemetry"]
    assert telemetry["cli"] == "claude" and telemetry["model"] == "m-1"
    assert (telemetry["input_tokens"], telemetry["output_tokens"]) == (10, 5)
    assert (telemetry["cli_start_ms"], telemetry["first_output_ms"], telemetry["total_ms"]) == (
        120,
        340,
        9000,
    )
    assert telemetry["raw_output"] == "stdout of the CLI"
    log = [json.loads(line) for line in telemetry["event_log"].splitlines()]
    assert [entry["kind"] for entry in log] == [
        "job_started",
        *["assistant_text"] * 4,
        "job_finished",
    ]
    assert log[-1]["data"]["status"] == clean["job"]["status"]


def test_a_finished_job_does_not_finish_again_from_an_event_with_a_new_id(
    plane: ControlPlane, database: Callable[..., Any]
) -> None:
    session_id, job_id = database(_new_job)
    done = _job_events(session_id, job_id)
    failed = _job_events(session_id, job_id, failed=True)
    assert _deliver(plane, [done["started"], done["end"]]) == [202, 202]
    before = database(_state, job_id)
    late = failed["end"].model_copy(update={"id": "another-id", "seq": 7})
    assert _deliver(plane, [late]) == [202]  # handled: its log entry is kept, the job is not
    after = database(_state, job_id)
    assert after["job"] == before["job"] and after["job"]["status"] == "succeeded"
    assert after["telemetry"]["status"] == "succeeded"


def _counts(session: Session) -> tuple[int, int, int]:
    return (
        session.scalar(select(func.count()).select_from(ProcessedEvent)) or 0,
        session.scalar(select(func.count()).select_from(JobEventRecord)) or 0,
        session.scalar(select(func.count()).select_from(TelemetryRequest)) or 0,
    )


def test_malformed_events_are_refused_with_nothing_written(
    plane: ControlPlane, database: Callable[..., Any]
) -> None:
    session_id, job_id = database(_new_job)
    other_session, _ = database(_new_job)
    started = _job_events(session_id, job_id)["started"]
    headers, body = to_binary(started)
    before = database(_counts)
    with plane.client() as client:
        # Not a CloudEvent, a bad payload, a non-JSON body, an unknown type.
        assert client.post("/v1/events", json={"hello": 1}).status_code == 400
        bad = json.loads(body)
        bad["cli"] = 7
        answer = client.post("/v1/events", headers=headers, content=json.dumps(bad))
        assert answer.status_code == 400 and answer.json()["error"]["code"] == "invalid_payload"
        answer = client.post("/v1/events", headers=headers, content=b"not json")
        assert answer.status_code == 400 and answer.json()["error"]["code"] == "invalid_data"
        unknown = {**headers, "ce-type": "dev.vwm.nonsense"}
        assert client.post("/v1/events", headers=unknown, content=body).status_code == 400
        # A job of one session reported by another session's events: never to be accepted.
        stolen = started.model_copy(update={"sessionid": other_session, "id": "stolen"})
        answer = _post(client, stolen)
        assert answer.status_code == 422
        assert answer.json()["error"]["code"] == "job_session_mismatch"
    assert database(_counts) == before
    assert database(_state, job_id)["job"]["status"] == "queued"


def test_unknown_jobs_and_types_not_handled_yet_are_acknowledged_and_change_nothing(
    plane: ControlPlane, database: Callable[..., Any]
) -> None:
    session_id, _ = database(_new_job)
    ghost = _job_events(session_id, "no-such-job")["end"]
    learned = new_event(
        LearningCompleted(worker_id="w1", summary="nothing", completed_at=datetime.now(UTC)),
        source=CONTROL_PLANE_SOURCE,
        session_id=session_id,
        job_id="learning-job",
    )
    before = database(_counts)
    with plane.client() as client:
        for event in (ghost, learned):
            answer = _post(client, event)
            assert answer.status_code == 200 and answer.content == b""
    assert database(_counts) == before


def test_only_admin_keys_may_post_events(plane: ControlPlane, database: Callable[..., Any]) -> None:
    session_id, job_id = database(_new_job)
    _, client_key = database(lambda s: ApiKeys(s).issue("a client", "client"))
    with plane.client(client_key) as client:
        answer = _post(client, _job_events(session_id, job_id)["started"])
    assert answer.status_code == 403
    assert database(_state, job_id)["job"]["status"] == "queued"
    with httpx.Client(base_url=plane.url) as anonymous:
        assert _post(anonymous, _job_events(session_id, job_id)["started"]).status_code == 401


def test_session_end_requested_ends_the_session_once(
    plane: ControlPlane, database: Callable[..., Any]
) -> None:
    owner = database(lambda s: factories.session(s).id)
    request = new_event(
        SessionEndRequested(requested_at=STARTED),
        source=CONTROL_PLANE_SOURCE,
        session_id=owner,
    )
    with plane.client() as client:
        assert _post(client, request).status_code == 202
        ended_at = database(lambda s: s.get(WorkerSession, owner).ended_at)
        assert client.get(f"/v1/sessions/{owner}").json()["status"] == "ended"
        assert _post(client, request, structured=True).status_code == 200
        again = request.model_copy(update={"id": "a-second-request"})
        assert _post(client, again).status_code == 202  # an ended session: a no-op
    assert database(lambda s: s.get(WorkerSession, owner).ended_at) == ended_at
    gone = request.model_copy(update={"sessionid": "no-such-session", "id": "x"})
    with plane.client() as client:
        assert _post(client, gone).status_code == 200


def test_a_jobs_log_past_the_telemetry_bound_replays_whole_from_its_stored_events(
    plane: ControlPlane, database: Callable[..., Any]
) -> None:
    session_id, job_id = database(_new_job)
    e = _job_events(session_id, job_id)
    big = "x" * 120_000  # three of these pass the telemetry copy's 256 KiB bound
    batches = [
        new_event(
            JobOutput(
                first_seq=seq,
                last_seq=seq,
                events=[
                    OutputEvent(
                        kind=EventKind.ASSISTANT_TEXT, data={"text": big}, seq=seq, ts=100.0 + seq
                    )
                ],
            ),
            source=harness_source(session_id),
            session_id=session_id,
            job_id=job_id,
            seq=seq,
            event_id=job_event_id(job_id, seq),
        )
        for seq in (2, 3, 4)
    ]
    end = e["end"].model_copy(update={"seq": 5, "id": job_event_id(job_id, 5)})
    assert _deliver(plane, [e["started"], *batches, end]) == [202] * 5
    telemetry = database(_state, job_id)["telemetry"]
    assert "bytes of output omitted" in telemetry["event_log"]  # the bounded copy lost some
    ending = new_event(
        SessionEndRequested(requested_at=STARTED),
        source=CONTROL_PLANE_SOURCE,
        session_id=session_id,
    )
    with plane.client() as client:
        assert _post(client, ending).status_code == 202  # replay without a harness
        with client.stream("GET", f"/v1/jobs/{job_id}/events") as stream:
            lines = [line for line in stream.iter_lines() if line.startswith("data:")]
        with client.stream("GET", f"/v1/jobs/{job_id}/events?after=3") as stream:
            rest = [line for line in stream.iter_lines() if line.startswith("data:")]
    replayed = [json.loads(line.removeprefix("data:")) for line in lines]
    assert [event["seq"] for event in replayed] == [1, 2, 3, 4, 5]
    assert [event["data"].get("text") for event in replayed[1:4]] == [big] * 3
    assert replayed[-1]["kind"] == "job_finished"
    assert [json.loads(line.removeprefix("data:"))["seq"] for line in rest] == [4, 5]
