"""A job's metered model calls: stored with its telemetry when it finishes, however its end is
learned (its harness's log, its `job.completed` event), once; shown by
`GET /v1/jobs/{id}/calls`, the SDK and `vwm job calls`, with the telemetry record saying where
its tokens come from. A call that does not validate is skipped, never the job's record, and a
job's end from a harness without a meter (no `calls`) records as before. On SQLite and on
PostgreSQL, which refuses what SQLite stores (NUL, numbers past a column's range)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from eventing.codec import to_binary
from eventing.events import (
    JobCompleted,
    JobStarted,
    JobSummary,
    JobTimings,
    TokenUsage,
    harness_source,
    job_event_id,
    new_event,
)
from eventing.job_events import JobEvent
from functions.db.engine import make_engine, session_factory, transaction
from functions.db.models import Job, ModelCallRecord, TelemetryRequest, WorkerSession
from functions.job_log import record_log
from tests.db import factories
from tests.support.control_plane import ControlPlane
from tests.support.postgres import postgres_database
from vwm.cli import app
from vwm.sdk.client import Client

# Hours ahead: the module is imported when the suite starts, and this must still be after every
# job the tests queue, however late in a long run they come.
STARTED = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=3)
FINISHED = STARTED + timedelta(seconds=20)
LIMIT = 256 * 1024
MODEL = "claude-sonnet-4-5-20250929"


def call(seq: int, **fields: Any) -> dict[str, Any]:
    """A call as the harness lists it (`ModelCall.model_dump(mode="json")`)."""
    return {
        "seq": seq,
        "api": "anthropic",
        "model": MODEL,
        "streamed": True,
        "status": 200,
        "outcome": "ok",
        "usage": {"input": 0, "cache_read": 0, "cache_write": 0, "output": 0, "reasoning": 0},
        "complete": True,
        "started_at": STARTED.timestamp() + seq,
        "latency_ms": 1000.0,
        "ttft_ms": None,
        "error": None,
        **fields,
    }


THREE_CALLS = [
    call(
        1,
        usage={
            "input": 1000,
            "cache_read": 2700,
            "cache_write": 800,
            "output": 200,
            "reasoning": 40,
        },
        latency_ms=4210.5,
        ttft_ms=812.25,
    ),
    call(
        2,
        streamed=False,
        status=429,
        outcome="http_error",
        complete=False,
        latency_ms=35.0,
        error="rate_limit_error: Number of request tokens has exceeded your per-minute rate limit",
    ),
    call(
        3,
        outcome="incomplete",
        complete=False,
        usage={"input": 300, "cache_read": 2700, "cache_write": 0, "output": 17, "reasoning": 0},
        latency_ms=9875.0,
        ttft_ms=640.5,
    ),
]
METERED = {"input": 1300, "cache_read": 5400, "cache_write": 800, "output": 217, "reasoning": 40}
CLI_SAID = {"input": 1300, "cache_read": 5400, "cache_write": 800, "output": 200, "reasoning": 40}
METERED_SUMMARY = {
    "final_text": "done",
    "usage": METERED,
    "model": MODEL,
    "cli_usage": CLI_SAID,
    "usage_source": "metered",
    "usage_mismatch": True,
}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def plane(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ControlPlane, str]]:
    """The control plane on each backend, with the URL of its database."""
    data_dir = tmp_path_factory.mktemp(f"calls-{request.param}") / "data"
    if request.param == "sqlite":
        plane = ControlPlane(data_dir, {})
        plane.start()
        yield plane, f"sqlite:///{data_dir / 'vwm.sqlite3'}"
        plane.stop()
        return
    with postgres_database("vwm_calls") as url:
        plane = ControlPlane(data_dir, {"VWM_DATABASE_URL": url})
        plane.start()
        yield plane, url
        plane.stop()


@pytest.fixture(scope="module")
def database(plane: tuple[ControlPlane, str]) -> Iterator[Callable[..., Any]]:
    engine = make_engine(plane[1])
    factory = session_factory(engine)

    def run(fn: Callable[..., Any], *args: Any) -> Any:
        with transaction(factory) as session:
            return fn(session, *args)

    yield run
    engine.dispose()


@pytest.fixture
def control_plane(plane: tuple[ControlPlane, str]) -> ControlPlane:
    return plane[0]


def new_job(session: Session) -> tuple[str, str]:
    owner = factories.session(session)
    job = factories.job(session, owner, mode="async")
    return owner.id, job.id


def log_of(job_id: str, finished: dict[str, Any]) -> list[JobEvent]:
    """A job's log as its harness keeps it: started, then finished with `finished` as data."""
    started = {"prompt": "hi", "cli": "claude", "model": None, "cli_version": "2.1.197"}
    return [
        JobEvent(job_id=job_id, seq=1, kind="job_started", data=started, ts=STARTED.timestamp()),
        JobEvent(job_id=job_id, seq=2, kind="job_finished", data=finished, ts=FINISHED.timestamp()),
    ]


def finished_data(summary: dict[str, Any], calls: Any = None) -> dict[str, Any]:
    data = {"status": "succeeded", "summary": summary, "exit_code": 0, "duration_ms": 20_000}
    return data if calls is None else {**data, "calls": calls}


def deliver_end(plane: ControlPlane, session_id: str, job_id: str, calls: list[Any]) -> None:
    """The job's `job.started` and `job.completed`, as its harness publishes them."""

    def event(payload: Any, seq: int) -> Any:
        return new_event(
            payload,
            source=harness_source(session_id),
            session_id=session_id,
            job_id=job_id,
            seq=seq,
            event_id=job_event_id(job_id, seq),
        )

    started = JobStarted(prompt="hi", cli="claude", cli_version="2.1.197", started_at=STARTED)
    summary = JobSummary(
        final_text="done",
        usage=TokenUsage(**METERED),
        model=MODEL,
        cli_usage=TokenUsage(**CLI_SAID),
        usage_source="metered",
        usage_mismatch=True,
    )
    end = JobCompleted(
        summary=summary,
        exit_code=0,
        started_at=STARTED,
        finished_at=FINISHED,
        timings=JobTimings(total_ms=20_000),
        calls=calls,
    )
    with plane.client() as client:
        for sent in (event(started, 1), event(end, 2)):
            headers, body = to_binary(sent)
            answer = client.post("/v1/events", headers=headers, content=body)
            assert answer.status_code in (200, 202), answer.text


def stored_calls(session: Session, job_id: str) -> list[dict[str, Any]]:
    rows = session.scalars(
        select(ModelCallRecord)
        .where(ModelCallRecord.job_id == job_id)
        .order_by(ModelCallRecord.seq)
    )
    return [
        {
            "seq": row.seq,
            "outcome": row.outcome,
            "status": row.status,
            "tokens": (row.input_tokens, row.cache_read_tokens, row.output_tokens),
            "session_worker": (row.session_id, row.worker_id),
            "error": row.error,
        }
        for row in rows
    ]


def telemetry(session: Session, job_id: str) -> dict[str, Any]:
    row = session.scalar(select(TelemetryRequest).where(TelemetryRequest.job_id == job_id))
    assert row is not None
    return {
        "input": row.input_tokens,
        "output": row.output_tokens,
        "usage_source": row.usage_source,
        "cli_usage": row.cli_usage,
        "usage_mismatch": row.usage_mismatch,
        "model_calls": row.model_calls,
    }


def status_of(session: Session, job_id: str) -> str:
    job = session.get(Job, job_id)
    assert job is not None
    return job.status


@pytest.mark.parametrize("path", ["log", "events"])
def test_a_job_with_three_calls_stores_them_lists_them_and_sums_its_telemetry(
    control_plane: ControlPlane, database: Callable[..., Any], path: str
) -> None:
    session_id, job_id = database(new_job)
    if path == "log":  # the recorder's and the reconciler's way
        database(
            record_log,
            job_id,
            log_of(job_id, finished_data(METERED_SUMMARY, THREE_CALLS)),
            "stdout",
            LIMIT,
        )
    else:  # the harness's CloudEvents
        deliver_end(control_plane, session_id, job_id, THREE_CALLS)

    assert database(status_of, job_id) == "succeeded"
    rows = database(stored_calls, job_id)
    assert [(r["seq"], r["outcome"], r["status"], r["tokens"]) for r in rows] == [
        (1, "ok", 200, (1000, 2700, 200)),
        (2, "http_error", 429, (0, 0, 0)),
        (3, "incomplete", 200, (300, 2700, 17)),
    ]
    worker_id = database(lambda s: s.get(WorkerSession, session_id).worker_id)
    assert {r["session_worker"] for r in rows} == {(session_id, worker_id)}
    assert rows[1]["error"] == THREE_CALLS[1]["error"]
    assert database(telemetry, job_id) == {
        "input": 1300,
        "output": 217,
        "usage_source": "metered",
        "cli_usage": CLI_SAID,
        "usage_mismatch": True,
        "model_calls": 3,
    }

    with control_plane.client() as client:
        answer = client.get(f"/v1/jobs/{job_id}/calls")
        assert answer.status_code == 200, answer.text
        listed = answer.json()
        records = client.get("/v1/telemetry/requests", params={"session_id": session_id})
    assert listed["next_cursor"] is None
    expected = [
        {**sent, "started_at": datetime.fromtimestamp(sent["started_at"], UTC)}
        for sent in THREE_CALLS
    ]
    got = [
        {**item, "started_at": datetime.fromisoformat(item["started_at"])}
        for item in listed["items"]
    ]
    assert got == expected
    (record,) = records.json()["items"]
    assert (record["usage_source"], record["usage_mismatch"], record["model_calls"]) == (
        "metered",
        True,
        3,
    )
    assert record["cli_usage"] == CLI_SAID
    assert record["tokens"] == METERED


def test_calls_come_a_page_at_a_time_through_the_api_the_sdk_and_the_command_line(
    control_plane: ControlPlane, database: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, job_id = database(new_job)
    database(
        record_log,
        job_id,
        log_of(job_id, finished_data(METERED_SUMMARY, THREE_CALLS)),
        "stdout",
        LIMIT,
    )
    with control_plane.client() as client:
        first = client.get(f"/v1/jobs/{job_id}/calls", params={"limit": 2}).json()
        second = client.get(
            f"/v1/jobs/{job_id}/calls", params={"limit": 2, "cursor": first["next_cursor"]}
        ).json()
    assert [item["seq"] for item in first["items"]] == [1, 2]
    assert [item["seq"] for item in second["items"]] == [3]
    assert second["next_cursor"] is None

    assert control_plane.admin_key is not None
    with Client(control_plane.url, control_plane.admin_key) as sdk:
        assert [c["seq"] for c in sdk.calls(job_id, page_size=1)] == [1, 2, 3]
        assert [c["outcome"] for c in sdk.get_job(job_id).calls()] == [
            "ok",
            "http_error",
            "incomplete",
        ]

    monkeypatch.delenv("VWM_URL", raising=False)
    monkeypatch.delenv("VWM_API_KEY", raising=False)
    options = ["--url", control_plane.url, "--api-key", control_plane.admin_key]
    runner = CliRunner()
    as_json = runner.invoke(app, [*options, "job", "calls", job_id, "--json"])
    assert as_json.exit_code == 0, as_json.output
    assert [c["status"] for c in json.loads(as_json.stdout)] == [200, 429, 200]
    table = runner.invoke(app, [*options, "job", "calls", job_id])
    assert table.exit_code == 0, table.output
    assert "http_error" in table.stdout and "usage.input" in table.stdout


def test_a_job_recorded_twice_keeps_one_set_of_calls(
    control_plane: ControlPlane, database: Callable[..., Any]
) -> None:
    session_id, job_id = database(new_job)
    log = log_of(job_id, finished_data(METERED_SUMMARY, THREE_CALLS))
    database(record_log, job_id, log, "stdout", LIMIT)
    database(record_log, job_id, log, "stdout", LIMIT)  # a retried recorder
    deliver_end(control_plane, session_id, job_id, THREE_CALLS)  # and the harness's events
    assert [row["seq"] for row in database(stored_calls, job_id)] == [1, 2, 3]
    assert database(telemetry, job_id)["model_calls"] == 3


def test_calls_that_do_not_validate_or_fit_are_skipped_and_the_job_is_recorded(
    control_plane: ControlPlane, database: Callable[..., Any]
) -> None:
    _, job_id = database(new_job)
    sent = [
        call(1, model="m" * 300, api="a-new-wire-api-with-a-long-name-x"),
        {"seq": 2, "api": "anthropic"},  # fields missing
        "not an object",
        call(3, outcome="exploded"),  # not an outcome
        call(1),  # a seq seen before
        call(4, status=10**12),  # past the column
        call(5, usage={"input": 2**70}),
        call(6, usage={"output": -1}),
        call(7, started_at=None),  # a NaN, as JSON writes it
        call(8, started_at=1e20),
        call(9, latency_ms=-5.0),
        call(10, ttft_ms=-0.5),
        call(0),
        call(11, error="x" * 10_000, future_field="ignored"),
    ]
    database(
        record_log, job_id, log_of(job_id, finished_data(METERED_SUMMARY, sent)), "stdout", LIMIT
    )

    assert database(status_of, job_id) == "succeeded"
    rows = database(stored_calls, job_id)
    assert [row["seq"] for row in rows] == [1, 11]
    assert len(rows[1]["error"]) == 2000
    assert database(telemetry, job_id)["model_calls"] == 2
    with control_plane.client() as client:
        (first, _) = client.get(f"/v1/jobs/{job_id}/calls").json()["items"]
    assert (len(first["model"]), first["api"]) == (200, "a-new-wire-api-with-a-long-name-"[:32])


@pytest.mark.parametrize("calls", ["not a list", {"seq": 1}, []])
def test_calls_that_are_no_list_store_none(database: Callable[..., Any], calls: Any) -> None:
    _, job_id = database(new_job)
    database(
        record_log, job_id, log_of(job_id, finished_data(METERED_SUMMARY, calls)), "stdout", LIMIT
    )
    assert database(status_of, job_id) == "succeeded"
    assert database(stored_calls, job_id) == []
    assert database(telemetry, job_id)["model_calls"] == 0


def test_an_old_harness_end_without_calls_records_as_before(
    control_plane: ControlPlane, database: Callable[..., Any]
) -> None:
    session_id, job_id = database(new_job)
    summary = {"final_text": "hi", "usage": {"input": 5, "output": 2}, "model": MODEL}
    database(record_log, job_id, log_of(job_id, finished_data(summary)), "stdout", LIMIT)

    assert database(status_of, job_id) == "succeeded"
    assert database(stored_calls, job_id) == []
    assert database(telemetry, job_id) == {
        "input": 5,
        "output": 2,
        "usage_source": "cli",
        "cli_usage": None,
        "usage_mismatch": False,
        "model_calls": 0,
    }
    with control_plane.client() as client:
        assert client.get(f"/v1/jobs/{job_id}/calls").json() == {"items": [], "next_cursor": None}
        (record,) = client.get("/v1/telemetry/requests", params={"session_id": session_id}).json()[
            "items"
        ]
    assert (record["usage_source"], record["cli_usage"], record["model_calls"]) == ("cli", None, 0)


def test_unknown_jobs_and_foreign_cursors_are_refused_with_a_code(
    control_plane: ControlPlane, database: Callable[..., Any]
) -> None:
    _, job_id = database(new_job)
    with control_plane.client() as client:
        missing = client.get("/v1/jobs/no-such-job/calls")
        running = client.get(f"/v1/jobs/{job_id}/calls")
        foreign = client.get(f"/v1/jobs/{job_id}/calls", params={"cursor": "eyJ4Ijox"})
        too_many = client.get(f"/v1/jobs/{job_id}/calls", params={"limit": 501})
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "not_found")
    assert running.json() == {"items": [], "next_cursor": None}  # stored when the job finishes
    assert (foreign.status_code, foreign.json()["error"]["code"]) == (400, "invalid_cursor")
    assert 400 <= too_many.status_code < 500
