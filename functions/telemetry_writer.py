"""Turn a finished job's event log into its final row and one telemetry record.

Called by the prompts function's recorder once the harness has sent ``job_finished``. Durations
come from the events' own timestamps, so they measure the harness's view of the run:
``cli_start`` is the time to the CLI's first event, ``first_output`` to its first text or tool
call, ``total`` the job's duration as the harness measured it.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.orm import Session

from functions.db.models import Job, JobStatus, Runtime, TelemetryRequest, Worker, WorkerSession
from functions.db.telemetry import bound_raw_output
from functions.db.transitions import transition_job

_LIFECYCLE = {"job_started", "job_finished", "stderr"}
_OUTPUT = {"text_delta", "assistant_text", "tool_call"}


def _ms(later: float | None, earlier: float | None) -> int | None:
    if later is None or earlier is None:
        return None
    return max(0, int((later - earlier) * 1000))


def record_job(
    session: Session,
    job_id: str,
    events: list[dict[str, Any]],
    stdout: str,
    instructions_version: int,
    limit: int,
) -> None:
    job = session.get(Job, job_id)
    if job is None or job.status not in ("queued", "running"):
        return  # recorded already (a retried recorder must not write twice)
    started = next((e for e in events if e["kind"] == "job_started"), None)
    finished = next((e for e in reversed(events) if e["kind"] == "job_finished"), None)
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
    data = finished["data"]
    summary = data.get("summary") or {}
    start_ts = started["ts"] if started else None
    first_cli = next((e["ts"] for e in events if e["kind"] not in _LIFECYCLE), None)
    first_output = next((e["ts"] for e in events if e["kind"] in _OUTPUT), None)
    transition_job(session, job, data["status"], result=summary or None, error=data.get("error"))

    row = session.get(WorkerSession, job.session_id)
    assert row is not None
    if summary.get("cli_session_id"):
        row.cli_session_id = summary["cli_session_id"]
    worker = session.get(Worker, row.worker_id)
    runtime = session.get(Runtime, worker.runtime_id) if worker else None
    usage = summary.get("usage") or {}
    session.add(
        TelemetryRequest(
            job_id=job.id,
            session_id=row.id,
            worker_id=row.worker_id,
            runtime_id=runtime.id if runtime else "",
            cli=(started or {}).get("data", {}).get("cli") or (runtime.cli if runtime else ""),
            model=(started or {}).get("data", {}).get("model"),
            input_tokens=usage.get("input", 0),
            cache_read_tokens=usage.get("cache_read", 0),
            cache_write_tokens=usage.get("cache_write", 0),
            output_tokens=usage.get("output", 0),
            reasoning_tokens=usage.get("reasoning", 0),
            cost_usd=summary.get("cost_usd"),
            cost_source=summary.get("cost_source"),
            queued_ms=_ms(
                job.started_at.timestamp() if job.started_at else None, job.created_at.timestamp()
            ),
            cli_start_ms=_ms(first_cli, start_ts),
            first_output_ms=_ms(first_output, start_ts),
            total_ms=data.get("duration_ms"),
            exit_code=data.get("exit_code"),
            status=data["status"],
            instructions_version=instructions_version,
            raw_output=bound_raw_output(stdout, limit),
            event_log=bound_raw_output(
                "\n".join(json.dumps(e, separators=(",", ":")) for e in events), limit
            ),
        )
    )
