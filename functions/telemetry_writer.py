"""Write a finished job's final row and its one telemetry record: the plain functions that both
ways of learning a job's end share.

Called by the prompts function's recorder (`record_job`, once the harness's event stream has sent
``job_finished``) and by the `events` function (`functions.job_events_handler`, from
``dev.vwm.job.*`` CloudEvents), so a job recorded either way gets the same row and telemetry.
Durations come from the harness's own clock: ``cli_start`` is the time to the CLI's first event,
``first_output`` to its first text or tool call, ``total`` the job's duration as it measured it.
A job's metered model calls (``calls`` of its end) are stored with its telemetry row
(`functions.call_records`), in the same transaction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from eventing.job_events import JobEvent, JobEventKind
from functions.call_records import add_call_rows, checked_calls, usage_facts
from functions.db.columns import utcnow
from functions.db.models import (
    ACTIVE_JOB_STATUSES,
    Job,
    JobStatus,
    Runtime,
    TelemetryRequest,
    Worker,
    WorkerSession,
)
from functions.db.telemetry import bound_raw_output
from functions.db.transitions import transition_job
from functions.metrics import observe_job_end

# Log entries that are not the CLI's output: `model_call` is the session's meter reporting a call.
_LIFECYCLE = {"job_started", "job_finished", "stderr", "model_call"}
_OUTPUT = {"text_delta", "assistant_text", "tool_call"}


@dataclass(frozen=True)
class JobEnd:
    """How a job ended, whoever learned it: the row's final fields and the telemetry's facts."""

    status: str
    summary: dict[str, Any]
    error: dict[str, Any] | None
    exit_code: int | None
    total_ms: int | None
    cli_start_ms: int | None
    first_output_ms: int | None
    cli: str | None  # None: the runtime's
    model: str | None  # `ran_model`: the one the CLI reported, else the one asked for
    raw_output: str
    event_log: str  # the job's events as JSON lines, unbounded (bounded when stored)
    instructions_version: int
    started_at: datetime | None = None  # None: stamped now, when the row has none yet
    finished_at: datetime | None = None
    cli_version: str | None = None  # as the CLI reported it (job_started), None: unknown
    worker_revision: int = 0  # the job's (stamped at dispatch), 0: none
    calls: Any = None  # the end's `calls` as sent (None: no meter); checked one by one


def ran_model(summary: dict[str, Any], begun: dict[str, Any]) -> str | None:
    """The model a job ran: the one its CLI reported (the summary's), else the one the
    harness asked for (``job_started``'s; None when neither the worker nor the runtime names
    one and the CLI's output names none)."""
    reported = summary.get("model")
    return reported if isinstance(reported, str) and reported else begun.get("model")


def event_log_text(events: list[dict[str, Any]]) -> str:
    return "\n".join(json.dumps(e, separators=(",", ":")) for e in events)


def finish_job(session: Session, job: Job, end: JobEnd, limit: int) -> bool:
    """Move an active job to its final status and add its telemetry row, in the caller's
    transaction. False (and nothing written) when the job has finished already: a job finishes
    once, whichever path or redelivery comes second."""
    if job.status not in ACTIVE_JOB_STATUSES:
        return False
    if job.status == JobStatus.QUEUED and end.status != JobStatus.FAILED:
        # Its start was never recorded (the event came late, or not at all): the job ran.
        started = {"started_at": end.started_at} if end.started_at else {}
        job = transition_job(session, job, JobStatus.RUNNING, **started)
    final: dict[str, Any] = {"result": end.summary or None, "error": end.error}
    if end.finished_at is not None:
        final["finished_at"] = end.finished_at
    if end.started_at is not None and job.started_at is None:
        final["started_at"] = end.started_at
    job = transition_job(session, job, end.status, **final)

    row = session.get(WorkerSession, job.session_id)
    assert row is not None  # a job's session outlives it (foreign key)
    if end.summary.get("cli_session_id"):
        row.cli_session_id = end.summary["cli_session_id"]
    row.last_activity_at = utcnow()  # a session's idle time counts from its last job's end
    worker = session.get(Worker, row.worker_id)
    runtime = session.get(Runtime, worker.runtime_id) if worker else None
    usage = end.summary.get("usage") or {}
    calls = checked_calls(job.id, end.calls)
    add_call_rows(session, job.id, row.id, row.worker_id, calls)
    facts = usage_facts(job.id, end.summary, calls)
    session.add(
        TelemetryRequest(
            job_id=job.id,
            session_id=row.id,
            worker_id=row.worker_id,
            runtime_id=runtime.id if runtime else "",
            cli=end.cli or (runtime.cli if runtime else ""),
            model=end.model,
            input_tokens=usage.get("input", 0),
            cache_read_tokens=usage.get("cache_read", 0),
            cache_write_tokens=usage.get("cache_write", 0),
            output_tokens=usage.get("output", 0),
            reasoning_tokens=usage.get("reasoning", 0),
            cost_usd=end.summary.get("cost_usd"),
            cost_source=end.summary.get("cost_source"),
            queued_ms=_ms(
                job.started_at.timestamp() if job.started_at else None, job.created_at.timestamp()
            ),
            cli_start_ms=end.cli_start_ms,
            first_output_ms=end.first_output_ms,
            total_ms=end.total_ms,
            exit_code=end.exit_code,
            status=end.status,
            instructions_version=end.instructions_version,
            worker_revision=end.worker_revision,
            cli_version=end.cli_version,
            raw_output=bound_raw_output(end.raw_output, limit),
            event_log=bound_raw_output(end.event_log, limit),
            usage_source=facts.usage_source,
            cli_usage=facts.cli_usage,
            usage_mismatch=facts.usage_mismatch,
            model_calls=len(calls),
        )
    )
    observe_job_end(
        session,
        status=end.status,
        duration_ms=end.total_ms,
        worker=worker.name if worker else None,
        model=end.model,
        usage=usage,
        cost_usd=end.summary.get("cost_usd"),
    )
    return True


def record_job(
    session: Session,
    job_id: str,
    events: list[JobEvent],
    stdout: str,
    instructions_version: int,
    limit: int,
) -> None:
    """The recorder's path: the job's whole event log, as followed from its harness."""
    job = session.get(Job, job_id)
    if job is None or job.status not in ACTIVE_JOB_STATUSES:
        return  # recorded already (a retried recorder must not write twice)
    started = next((e for e in events if e.kind == JobEventKind.JOB_STARTED), None)
    finished = next((e for e in reversed(events) if e.kind == JobEventKind.JOB_FINISHED), None)
    if finished is None:
        transition_job(
            session,
            job,
            JobStatus.FAILED,
            error={
                "code": "harness_lost",
                "message": "the harness's event stream ended before the job did",
            },
        )
        return
    data = finished.data
    start_ts = started.ts if started else None
    first_cli = next((e.ts for e in events if e.kind not in _LIFECYCLE), None)
    first_output = next((e.ts for e in events if e.kind in _OUTPUT), None)
    begun = started.data if started else {}
    summary = data.get("summary") or {}
    end = JobEnd(
        status=data["status"],
        summary=summary,
        error=data.get("error"),
        exit_code=data.get("exit_code"),
        total_ms=data.get("duration_ms"),
        cli_start_ms=_ms(first_cli, start_ts),
        first_output_ms=_ms(first_output, start_ts),
        cli=begun.get("cli"),
        model=ran_model(summary, begun),
        raw_output=stdout,
        event_log=event_log_text([event.model_dump(mode="json") for event in events]),
        instructions_version=instructions_version,
        cli_version=begun.get("cli_version"),
        worker_revision=job.worker_revision or 0,
        calls=data.get("calls"),
    )
    finish_job(session, job, end, limit)


def _ms(later: float | None, earlier: float | None) -> int | None:
    if later is None or earlier is None:
        return None
    return max(0, int((later - earlier) * 1000))
