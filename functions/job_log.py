"""A job's state from its harness's CloudEvents: the `events` function's job handlers.

Called by `functions.events`, inside one transaction per event. Each `dev.vwm.job.*` event is
stored in `vwm.job_events` as the entry of the job's log it reports (``job_started`` at seq 1, the
output batches' events at their seqs, ``job_finished`` at the last), in the same JSON shape as
the harness's log, so the stored log is the same whatever order the events came in. Writing the
row and telemetry goes through `functions.telemetry_writer.finish_job`, as the recorder does.

Everything here is idempotent by state: an entry already stored is kept, a job that has finished
does not finish again, and whatever arrives late (a start or an output batch after the end)
refreshes the telemetry row's bounded copy of the log, so the final rows are those of an
in-order delivery.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from eventing.events import (
    JOB_COMPLETED,
    JOB_FAILED,
    JOB_OUTPUT,
    JOB_STARTED,
    EventError,
    JobOutput,
    JobStarted,
    VwmEvent,
)
from eventing.events.payloads import JobFinished
from eventing.job_events import JobEvent
from functions.db.models import (
    ACTIVE_JOB_STATUSES,
    Job,
    JobEventRecord,
    JobStatus,
    TelemetryRequest,
)
from functions.db.telemetry import bound_raw_output
from functions.db.transitions import transition_job
from functions.telemetry_writer import JobEnd, event_log_text, finish_job, ran_model, record_job

JOB_TYPES = frozenset({JOB_STARTED, JOB_OUTPUT, JOB_COMPLETED, JOB_FAILED})


def apply(session: Session, event: VwmEvent, limit: int) -> bool:
    """Apply one job event. False when its job is unknown (nothing written); raises
    `EventError` (422) when the event names a job of another session."""
    job = session.get(Job, event.jobid)
    if job is None:
        return False
    if job.session_id != event.sessionid:
        raise EventError(
            "job_session_mismatch",
            f"job {job.id} belongs to another session than {event.sessionid}: the publisher "
            "must send a job's events with its own session's id",
            status=422,
            jobid=job.id,
            sessionid=event.sessionid,
        )
    data = event.data
    finished_before = job.status not in ACTIVE_JOB_STATUSES
    added = 0
    if isinstance(data, JobStarted):
        added = _store(session, job.id, _logged([_started_entry(job.id, event.seq or 1, data)]))
        if job.status == JobStatus.QUEUED:
            transition_job(session, job, JobStatus.RUNNING, started_at=data.started_at)
    elif isinstance(data, JobOutput):
        outputs = [_output_entry(job.id, e.model_dump(mode="json")) for e in data.events]
        added = _store(session, job.id, _logged(outputs))
    elif isinstance(data, JobFinished):
        seq = event.seq or 1
        added = _store(session, job.id, _logged([_finished_entry(job.id, seq, data)]))
        if finished_before:
            # Recorded already (by a caller that followed the job, or an earlier delivery).
            if added:
                _refresh_telemetry(session, job.id, limit)
            return True
        entries = stored_log(session, job.id)
        begun: dict[str, Any] = next((e["data"] for e in entries if e["kind"] == "job_started"), {})
        error = data.error.model_dump(mode="json") if data.error else None
        summary = data.summary.model_dump(mode="json")
        end = JobEnd(
            status=str(data.status),
            summary=summary,
            error=error,
            exit_code=data.exit_code,
            total_ms=data.timings.total_ms,
            cli_start_ms=data.timings.cli_start_ms,
            first_output_ms=data.timings.first_output_ms,
            cli=begun.get("cli"),
            model=ran_model(summary, begun),
            raw_output=data.raw_output,
            event_log=event_log_text(entries),
            instructions_version=job.instructions_version or 0,
            started_at=data.started_at,
            finished_at=data.finished_at,
            cli_version=begun.get("cli_version"),
            worker_revision=job.worker_revision or 0,
            calls=data.calls,
        )
        if finish_job(session, job, end, limit):
            return True  # its telemetry was just written from the whole stored log
    if added and finished_before:
        # An entry arrived after the job's end: its telemetry's copy of the log catches up.
        # (Nothing new, or a job still running, has nothing to refresh: that costs a whole
        # read of the log, once per late batch.)
        _refresh_telemetry(session, job.id, limit)
    return True


def record_log(
    session: Session, job_id: str, entries: list[JobEvent], stdout: str, limit: int
) -> None:
    """A job's log as its harness keeps it (followed by a caller, or asked for by the
    reconciler): stored entry by entry as the events would have stored it, then the job
    finished from it, once. A log without ``job_finished`` fails the job (`harness_lost`)."""
    job = session.get(Job, job_id)
    if job is None:
        return
    _store(session, job_id, entries)
    record_job(session, job_id, entries, stdout, job.instructions_version or 0, limit)


def stored_log(session: Session, job_id: str, after: int = 0) -> list[dict[str, Any]]:
    """The job's stored log entries after seq `after`, in seq order, as the harness logs them."""
    rows = session.scalars(
        select(JobEventRecord)
        .where(JobEventRecord.job_id == job_id, JobEventRecord.seq > after)
        .order_by(JobEventRecord.seq)
    )
    return [
        {"job_id": row.job_id, "seq": row.seq, "kind": row.kind, "data": row.data, "ts": row.ts}
        for row in rows
    ]


def _store(session: Session, job_id: str, entries: list[JobEvent]) -> int:
    """Add the entries the job's log does not hold yet; one already there is kept as it is
    (a re-sent batch may overlap an earlier one). Each row holds the entry's JSON form, the
    harness's log line as it was. Returns how many were added."""
    seqs = [entry.seq for entry in entries]
    held = set(
        session.scalars(
            select(JobEventRecord.seq).where(
                JobEventRecord.job_id == job_id, JobEventRecord.seq.in_(seqs)
            )
        )
    )
    new = [entry for entry in entries if entry.seq not in held]
    for entry in new:
        session.add(JobEventRecord(**entry.model_dump(mode="json")))
    session.flush()
    return len(new)


def _logged(entries: list[dict[str, Any]]) -> list[JobEvent]:
    """Entries built from an event's payload, as the log entries they are."""
    return [JobEvent.model_validate(entry) for entry in entries]


def _refresh_telemetry(session: Session, job_id: str, limit: int) -> None:
    """A finished job's telemetry keeps a bounded copy of its log, the CLI and version its
    start named and the model it ran: brought up to date when an entry arrives after the end."""
    row = session.scalar(select(TelemetryRequest).where(TelemetryRequest.job_id == job_id))
    if row is None:
        return
    entries = stored_log(session, job_id)
    row.event_log = bound_raw_output(event_log_text(entries), limit)
    begun = next((e["data"] for e in entries if e["kind"] == "job_started"), None)
    if begun is not None:
        row.cli = begun.get("cli") or row.cli
        row.cli_version = begun.get("cli_version") or row.cli_version
        finished: dict[str, Any] = next(
            (e["data"] for e in entries if e["kind"] == "job_finished"), {}
        )
        row.model = ran_model(finished.get("summary") or {}, begun) or row.model


def _started_entry(job_id: str, seq: int, data: JobStarted) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "seq": seq,
        "kind": "job_started",
        "data": {
            "prompt": data.prompt,
            "cli": data.cli,
            "model": data.model,
            "resume_id": data.resume_id,
            "cli_version": data.cli_version,
        },
        "ts": data.started_at.timestamp(),
    }


def _output_entry(job_id: str, event: dict[str, Any]) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "seq": event["seq"],
        "kind": event["kind"],
        "data": event["data"],
        "ts": event["ts"],
    }


def _finished_entry(job_id: str, seq: int, data: JobFinished) -> dict[str, Any]:
    finished: dict[str, Any] = {
        "status": str(data.status),
        "summary": data.summary.model_dump(mode="json"),
        "error": data.error.model_dump(mode="json") if data.error else None,
        "exit_code": data.exit_code,
        "duration_ms": data.timings.total_ms,
    }
    if data.calls is not None:  # as the harness logged it: `calls` only with a meter
        finished["calls"] = data.calls
    return {
        "job_id": job_id,
        "seq": seq,
        "kind": "job_finished",
        "data": finished,
        "ts": data.finished_at.timestamp(),
    }
