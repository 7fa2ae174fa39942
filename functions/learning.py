"""Auto-learning: before a session of a worker with `auto_learning` ends, the worker records what
it learned in its knowledge repository (docs/learning.md).

1. A learning job runs on the session's harness like a sync prompt (kind `learning`), its
   prompt the `learning_prompt` system setting (editable and versioned like the global
   instructions; a default when unset).
2. The harness commits what the job changed in `worker_repo/` with provenance (session, job,
   worker, the versions in play) as trailers, and pushes it: to the worker repository's branch,
   or in `review` mode to `learning/<session id>` for a person to merge
   (``POST /v1/learning/commit``).
3. A `vw_telemetry.learnings` row records the outcome (`recorded`, `nothing`, or `failed` with
   the error) and `dev.vwm.learning.completed` says so, in the same transaction.

Learning never blocks the end of a session: whatever fails is recorded and the end goes on. A
session ended again (a retried push, the reconciler carrying on a half-done end) does not learn
twice: one learning row per session.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from eventing.events import CONTROL_PLANE_SOURCE, LearningCompleted, new_event
from eventing.events.payloads import TokenUsage
from functions.broker.outbox import add
from functions.context import db
from functions.db.errors import DbError
from functions.db.models import Job, JobKind, JobMode, JobStatus, Learning, LearningStatus
from functions.db.repositories import Settings
from functions.db.transitions import start_job
from functions.errors import FunctionsError
from functions.harness_client import HarnessCallError
from functions.job_dispatch import JobStart, dispatch
from functions.job_recording import follow_to_end, is_final
from functions.lifecycle_events import error_info
from functions.runtime.base import HarnessEndpoint
from functions.runtime.errors import RuntimeBackendError
from functions.session_runtime import SessionView, client_for, job_timeout_s
from functions.session_sync import Wanted, wanted

logger = logging.getLogger(__name__)

LEARNING_PROMPT = "learning_prompt"
KNOWLEDGE_DIR = "worker_repo/knowledge"
DEFAULT_LEARNING_PROMPT = f"""\
This session is ending. Before it does, record what you learned in it that future sessions of \
this worker should know, as short Markdown notes under `{KNOWLEDGE_DIR}/` in the workspace \
(next to `session_repo/`, your working directory): durable facts about the code and the \
systems you worked on, conventions, pitfalls and how you got past them, commands that work. \
Update an existing note rather than adding a near copy; one topic per file. Do not record \
secrets, credentials or personal data, nor anything only this session's task needs. If you \
learned nothing worth keeping, change nothing. Do not commit: VWM commits and pushes the notes.

End your answer with one short paragraph saying what you recorded."""
# A learning job's bound when neither the worker nor its runtime sets a job timeout.
LEARNING_TIMEOUT_S = 900
SUMMARY_CHARS = 8000


@dataclass(frozen=True)
class LearningPrompt:
    text: str
    version: int  # 0: the default (the setting was never written)


def learning_prompt(session: Session) -> LearningPrompt:
    row = Settings(session).get(LEARNING_PROMPT)
    if row is None or not (isinstance(row.value, str) and row.value.strip()):
        return LearningPrompt(DEFAULT_LEARNING_PROMPT, row.version if row else 0)
    return LearningPrompt(row.value, row.version)


def has_learned(session: Session, session_id: str) -> bool:
    return (
        session.scalar(select(Learning.id).where(Learning.session_id == session_id).limit(1))
        is not None
    )


async def learn(view: SessionView, endpoint: HarnessEndpoint) -> None:
    """Run the session's learning (see the module's docstring); never raises but for a
    cancellation. The caller checks the worker has auto-learning on."""
    session_id = view.session.id
    if await db(has_learned, session_id):
        return
    prompt = await db(learning_prompt)
    job_id: str | None = None
    try:
        want = await db(wanted, view)
        job_id = await db(_queue, view, prompt.text, want)
        if not await db(is_final, job_id):  # else an end carried on after a crash: it ran
            start = JobStart(job_id=job_id, prompt=prompt.text, timeout_s=_timeout_s(view))
            endpoint = await dispatch(view, endpoint, start, want)
            await follow_to_end(job_id, session_id, endpoint)
        job = await db(_job, job_id)
        if job.status != JobStatus.SUCCEEDED:
            error = job.error or {"code": "learning_failed", "message": "the learning job failed"}
            await db(_record, view, job_id, prompt.version, None, error)
            return
        summary = _summary(job)
        async with client_for(endpoint) as harness:
            outcome = await harness.learning_commit(
                {
                    "mode": view.worker.learning_mode,
                    "session_id": session_id,
                    "job_id": job_id,
                    "worker": view.worker.name,
                    "instructions_version": want.instructions_version,
                    "worker_revision": want.worker_revision,
                    "prompt_version": prompt.version,
                    "summary": summary,
                }
            )
        await db(_record, view, job_id, prompt.version, outcome.model_dump(mode="json"), None)
    except (FunctionsError, HarnessCallError, RuntimeBackendError) as exc:
        error = {"code": exc.code, "message": exc.message}
        logger.warning("learning failed", extra={"session_id": session_id, "code": exc.code})
        try:
            await db(_record, view, job_id, prompt.version, None, error)
        except DbError:
            logger.exception("could not record a failed learning", extra={"session_id": session_id})


def _queue(session: Session, view: SessionView, prompt: str, want: Wanted) -> str:
    """The learning job, once per session (its idempotency key): an end carried on by another
    process finds the job the first one queued."""
    started = start_job(
        session,
        view.session.id,
        prompt=prompt,
        mode=JobMode.SYNC,
        kind=JobKind.LEARNING,
        idempotency_key=f"learning:{view.session.id}",
        timeout_s=_timeout_s(view),
    )
    if started.created:  # the versions it runs with, as a prompt's dispatch stamps them
        started.job.worker_revision = want.worker_revision
        started.job.instructions_version = want.instructions_version
    return started.job.id


def _timeout_s(view: SessionView) -> int:
    bound = job_timeout_s(view)
    return int(bound) if bound else LEARNING_TIMEOUT_S


def _job(session: Session, job_id: str) -> Job:
    row = session.get(Job, job_id)
    assert row is not None
    session.expunge(row)
    return row


def _summary(job: Job) -> str:
    text = str((job.result or {}).get("final_text") or "").strip()
    return text[-SUMMARY_CHARS:] if text else "(the learning run gave no summary)"


def _record(
    session: Session,
    view: SessionView,
    job_id: str | None,
    prompt_version: int,
    outcome: dict[str, Any] | None,
    error: dict[str, Any] | None,
) -> None:
    """The learnings row and `dev.vwm.learning.completed`, together."""
    job = session.get(Job, job_id) if job_id else None
    result = (job.result if job else None) or {}
    usage = result.get("usage") or {}
    outcome = outcome or {}
    if error is None and outcome.get("error"):
        error = outcome["error"]
    status = (
        LearningStatus.FAILED
        if error is not None
        else LearningStatus.RECORDED
        if outcome.get("status") == "recorded"
        else LearningStatus.NOTHING
    )
    summary = _summary(job) if job is not None and job.result else ""
    row = Learning(
        session_id=view.session.id,
        worker_id=view.worker.id,
        job_id=job_id,
        summary=summary,
        files_changed=list(outcome.get("files_changed") or []),
        commit_sha=outcome.get("commit"),
        branch=outcome.get("branch") if outcome.get("pushed") else None,
        status=status,
        mode=view.worker.learning_mode,
        error=error,
        prompt_version=prompt_version,
        input_tokens=int(usage.get("input", 0)),
        output_tokens=int(usage.get("output", 0)),
        cache_read_tokens=int(usage.get("cache_read", 0)),
        cache_write_tokens=int(usage.get("cache_write", 0)),
        cost_usd=result.get("cost_usd"),
    )
    session.add(row)
    session.flush()
    if job_id is None:
        return  # no job ran (the session was busy): the event names one, the row is enough
    payload = LearningCompleted(
        worker_id=row.worker_id,
        status=status.value,
        mode="review" if row.mode == "review" else "direct",
        summary=row.summary,
        files_changed=row.files_changed,
        commit_sha=row.commit_sha,
        branch=row.branch,
        error=error_info(error, default_code="learning_failed") if error else None,
        usage=TokenUsage(
            input=row.input_tokens,
            output=row.output_tokens,
            cache_read=row.cache_read_tokens,
            cache_write=row.cache_write_tokens,
        ),
        cost_usd=row.cost_usd,
        cost_source=result.get("cost_source") if row.cost_usd is not None else None,
        completed_at=datetime.now(UTC),
    )
    add(
        session,
        new_event(payload, source=CONTROL_PLANE_SOURCE, session_id=view.session.id, job_id=job_id),
    )
    logger.info(
        "learning recorded",
        extra={
            "session_id": view.session.id,
            "status": status.value,
            "commit": row.commit_sha,
            "branch": row.branch,
        },
    )
