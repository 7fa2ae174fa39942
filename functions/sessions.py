"""The `sessions` function: create a session for a worker, get, list, end.

Creating provisions the harness through the runtime backend, waits until it answers and
bootstraps it (worker repo, session repo, instructions); the answer comes when the session is
ready, or at once with `wait: false` (poll `GET /v1/sessions/{id}`). Ending asks the harness to
write the transcript, commit and push, then tears the harness down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import datetime
from typing import Any, Literal

from pydantic import ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from eventing.errors import VwmError
from eventing.events import EndReason
from eventing.harness_api import ShutdownOutcome
from eventing.lazy_models import LazyModel
from functions import learning, lifecycle_events, session_files
from functions.api import Endpoint
from functions.budgets_api import SESSION_ENDPOINTS as BUDGET_ENDPOINTS
from functions.budgets_api import (
    SessionBudgetIn,
    SessionBudgetOut,
    session_budget,
    set_session_limits,
)
from functions.context import backend, db, read, services, settings
from functions.db.errors import ConflictError
from functions.db.models import ACTIVE_JOB_STATUSES, Job, SessionStatus, WorkerSession
from functions.db.repositories import Runtimes, Sessions, Workers
from functions.db.transitions import transition_session
from functions.harness_client import HarnessCallError
from functions.http import error_response, parse_body, parse_query
from functions.job_recording import fail_unrecorded, record_from_harness
from functions.prompts import SESSION_JOBS
from functions.repo_policy import RepoPolicy
from functions.runtime.base import HarnessEndpoint, RuntimeHandle
from functions.runtime.errors import RuntimeBackendError
from functions.session_activity import SessionActivity, activity_of
from functions.session_runtime import (
    SessionView,
    bootstrap_body,
    client_for,
    harness_of,
    harness_spec,
    load,
    require_credential,
)
from functions.session_sync import Wanted, sync_skills, wanted

logger = logging.getLogger(__name__)

_CALLER_FIXABLE = {"git_failed", "bad_request", "invalid_request", "conflict", "credential_missing"}


# How much longer than a harness may take to answer a replayed create waits for the first
# request's session (it bootstraps after it answers: clones, instructions, skills).
REPLAY_WAIT_MARGIN_S = 120.0


class RepoRef(LazyModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(min_length=1, max_length=2000)
    branch: str = Field(default="main", min_length=1, max_length=200)


class SessionIn(LazyModel):
    model_config = ConfigDict(extra="forbid")
    worker: str = Field(min_length=1, max_length=100)
    session_repo: RepoRef | None = None
    wait: bool = True
    budget: SessionBudgetIn | None = Field(
        default=None, description="the session's own budget (docs/budgets.md)"
    )
    idempotency_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="sent again with the same key (per worker), the create answers the session "
        "the first request made, as it is now, instead of starting another",
    )


class SessionOut(LazyModel):
    id: str
    worker: str
    status: Literal["provisioning", "ready", "ending", "ended", "failed"]
    session_repo: RepoRef | None
    cli_session_id: str | None
    idempotency_key: str | None = None  # the create request's, if it had one
    error: dict[str, Any] | None
    # Once ended: what became of the work, per repository (docs/control-plane.md, "Ending").
    result: dict[str, Any] | None = None
    created_at: datetime
    ready_at: datetime | None
    ended_at: datetime | None
    # Limits, used, left and the state its meter gets (functions.budgets): in a session's own
    # answers; null in lists, where it would cost a sum per row.
    budget: SessionBudgetOut | None = None
    # Jobs, last activity, tokens and cost so far (functions.session_activity).
    activity: SessionActivity | None = None


class SessionList(LazyModel):
    items: list[SessionOut]
    next_cursor: str | None


class SessionQuery(LazyModel):
    model_config = ConfigDict(extra="forbid")
    worker: str | None = Field(default=None, max_length=100)
    status: Literal["provisioning", "ready", "ending", "ended", "failed"] | None = None
    limit: int = Field(default=50, ge=1, le=500)
    cursor: str | None = Field(default=None, max_length=500)


class EndQuery(LazyModel):
    model_config = ConfigDict(extra="forbid")
    learn: bool = Field(
        default=True,
        description="run auto-learning first, if the worker has it on (false: skip it)",
    )


def session_out(
    row: WorkerSession,
    worker_name: str,
    budget: dict[str, Any] | None = None,
    activity: dict[str, Any] | None = None,
) -> dict[str, Any]:
    repo = (
        RepoRef(url=row.session_repo_url, branch=row.session_repo_branch or "main")
        if row.session_repo_url
        else None
    )
    return SessionOut.model_validate(
        dict(
            id=row.id,
            worker=worker_name,
            status=row.status,
            session_repo=repo,  # type: ignore[arg-type]
            cli_session_id=row.cli_session_id,
            idempotency_key=row.idempotency_key,
            error=row.error,
            result=row.result,
            created_at=row.created_at,
            ready_at=row.ready_at,
            ended_at=row.ended_at,
            budget=budget,
            activity=activity,
        )
    ).model_dump(mode="json")


async def create_session(request: Request) -> Response:
    body = await parse_body(request, SessionIn, settings().max_request_bytes)

    def create(session: Session) -> tuple[dict[str, Any], bool]:
        worker = Workers(session).get(body.worker)
        if body.idempotency_key is not None and (earlier := _keyed(session, worker.id, body)):
            return earlier, False
        # Before anything is written: which repositories this session may have cloned.
        policy = RepoPolicy.read(session, settings().allow_local_repos)
        policy.check_worker_repo(worker.repo_url, worker.name)
        if body.session_repo is not None:
            policy.check_session_repo(body.session_repo.url)
        runtime = Runtimes(session).get_by_id(worker.runtime_id)
        if runtime.credential_ref:
            require_credential(runtime)  # refuse now rather than fail the session later
        row = WorkerSession(
            worker_id=worker.id,
            idempotency_key=body.idempotency_key,
            status=SessionStatus.PROVISIONING,
            session_repo_url=body.session_repo.url if body.session_repo else None,
            session_repo_branch=body.session_repo.branch if body.session_repo else None,
            workspace="",
        )
        if body.budget is not None:
            set_session_limits(row, body.budget)
        session.add(row)
        session.flush()
        return session_out(row, worker.name, session_budget(session, row)), True

    try:
        created, new = await db(create)
    except IntegrityError:
        if body.idempotency_key is None:
            raise
        created, new = await db(create)  # the same key at the same moment: that one's session
    if not new:
        return await _replayed(created, body.wait)
    if not body.wait:
        # Outlives this request: the app's services keep it, and cancel it at shutdown (the
        # reconciler then fails the session, as after a crash).
        services().spawn(_provision(created["id"]), name=f"provision-{created['id']}")
        return JSONResponse(created, status_code=202)
    current = await _provision(created["id"])
    if current is None:  # failed: read again, with the reason why
        current = await db(lambda s: _out(s, created["id"]))
    return _answer(current, 201)


def _keyed(session: Session, worker_id: str, body: SessionIn) -> dict[str, Any] | None:
    """The session an earlier request with this idempotency key made for the worker, as it is
    now; a `conflict` if that request named another session repository."""
    row = session.scalar(
        select(WorkerSession).where(
            WorkerSession.worker_id == worker_id,
            WorkerSession.idempotency_key == body.idempotency_key,
        )
    )
    if row is None:
        return None
    asked = (body.session_repo.url, body.session_repo.branch) if body.session_repo else None
    made = (row.session_repo_url, row.session_repo_branch) if row.session_repo_url else None
    if asked != made:
        raise ConflictError(
            "this idempotency key made a session with another session repository; use a new "
            "key for a new session",
            code="idempotency_key_reused",
            session_id=row.id,
        )
    return _out(session, row.id)


async def _replayed(earlier: dict[str, Any], wait: bool) -> Response:
    """The answer to a create sent again: the session as it is now (200). With `wait`, one the
    first request is still starting is waited for, as the first request waits."""
    current = earlier
    if wait:
        deadline = time.monotonic() + settings().harness_ready_timeout_s + REPLAY_WAIT_MARGIN_S
        pause = 0.1
        while current["status"] == SessionStatus.PROVISIONING and time.monotonic() < deadline:
            await asyncio.sleep(pause)
            pause = min(pause * 2, 1.0)
            current = await read(_out, earlier["id"])
    return _answer(current, 200)


def _answer(current: dict[str, Any], ok_status: int) -> Response:
    """A create's answer: the session once ready (201 when this request made it, 200 for one
    made before under the same idempotency key, ended since or not); 202 for one the first
    request is still starting; else the reason it failed, with the status its cause calls for."""
    status = current["status"]
    if status == SessionStatus.READY or (
        ok_status == 200 and status in (SessionStatus.ENDING, SessionStatus.ENDED)
    ):
        return JSONResponse(current, status_code=ok_status)
    if status == SessionStatus.PROVISIONING and ok_status == 200:
        return JSONResponse(current, status_code=202)
    error = current["error"] or {}
    code = error.get("code", "session_failed")
    # The harness could not use what the request named (repo, branch): the caller's to fix.
    return error_response(
        422 if code in _CALLER_FIXABLE else 503,
        "session_failed",
        error.get("message", "the session could not start"),
        cause=code,
        session_id=current["id"],
    )


async def _provision(session_id: str) -> dict[str, Any] | None:
    """Start and bootstrap the harness; the session ends `ready` or `failed` with a reason.
    Returns the session as `GET` shows it once it is ready, None when it failed."""
    handle: RuntimeHandle | None = None
    try:
        # What the harness is given is read with the rest, before it starts: one transaction
        # less on the way to ready (a change meanwhile reaches it before its first prompt,
        # `session_sync`, as any later change does).
        view, want = await read(_starting, session_id)
        spec = harness_spec(view)
        runtime = backend()
        handle = await runtime.provision(spec)
        await db(
            _save_provisioned,
            session_id,
            {
                "runtime_state": handle.to_dict(),
                "workspace": str(handle.state.get("workspace", "")),
            },
        )
        endpoint = await runtime.wait_ready(handle, settings().harness_ready_timeout_s)
        async with client_for(endpoint) as harness:
            await harness.bootstrap(bootstrap_body(view, want.instructions))
            if want.skills:  # a new workspace has none: with none wanted, nothing to ask
                await sync_skills(harness, want.skills)
        ready = {
            "endpoint": endpoint.url,
            "instructions_version": want.instructions_version,
            "worker_revision": want.worker_revision,
            "skills_digest": want.skills_digest,
        }
        shown = await db(_become_ready, session_id, view.worker.name, ready)
        logger.info("session ready", extra={"session_id": session_id})
        return shown
    except Exception as exc:  # any failure must leave the session `failed` with a reason
        if handle is not None:
            with contextlib.suppress(RuntimeBackendError):
                await backend().teardown(handle)  # no harness may outlive a failed start
        code = exc.code if isinstance(exc, VwmError) else "session_failed"
        message = (exc.message if isinstance(exc, VwmError) else "") or str(exc)
        logger.warning("session failed to start", extra={"session_id": session_id, "code": code})
        await db(_fail_if_starting, session_id, {"code": str(code), "message": message})
        return None


def _starting(session: Session, session_id: str) -> tuple[SessionView, Wanted]:
    view = load(session, session_id)
    return view, wanted(session, view)


def _fail_if_starting(session: Session, session_id: str, error: dict[str, Any]) -> None:
    """Mark a session that did not start as failed, unless it was ended meanwhile."""
    row = session.get(WorkerSession, session_id)
    if row is not None and row.status == SessionStatus.PROVISIONING:
        row = transition_session(session, row, SessionStatus.FAILED, error=error)
        lifecycle_events.session_ended(session, row, EndReason.FAILED)


def _save_provisioned(session: Session, session_id: str, fields: dict[str, Any]) -> None:
    """Its harness was launched: where it runs is saved, and `dev.vwm.session.created` told."""
    row = session.get(WorkerSession, session_id)
    assert row is not None
    for name, value in fields.items():
        setattr(row, name, value)
    session.flush()
    lifecycle_events.session_created(session, row)


def _become_ready(
    session: Session, session_id: str, worker_name: str, fields: dict[str, Any]
) -> dict[str, Any]:
    """The session made ready; returned as `GET` shows it, read in the same transaction."""
    row = session.get(WorkerSession, session_id)
    assert row is not None
    row = transition_session(session, row, SessionStatus.READY, **fields)
    lifecycle_events.session_ready(session, row)
    return session_out(
        row, worker_name, session_budget(session, row), activity_of(session, [row.id])[row.id]
    )


def _transition(
    session: Session, session_id: str, to: SessionStatus, fields: dict[str, Any]
) -> None:
    row = session.get(WorkerSession, session_id)
    assert row is not None
    transition_session(session, row, to, **fields)


def _out(session: Session, session_id: str) -> dict[str, Any]:
    view = load(session, session_id)
    return session_out(
        view.session,
        view.worker.name,
        session_budget(session, view.session),
        activity_of(session, [session_id])[session_id],
    )


async def get_session(request: Request) -> Response:
    session_id = request.path_params["session_id"]
    return JSONResponse(await read(lambda s: _out(s, session_id)))


async def list_sessions(request: Request) -> Response:
    query = parse_query(request, SessionQuery)

    def page(session: Session) -> dict[str, Any]:
        workers = {w.id: w.name for w in Workers(session).list_all()}
        worker_id = None
        if query.worker is not None:
            worker_id = next((i for i, name in workers.items() if name == query.worker), None)
            if worker_id is None:
                return {"items": [], "next_cursor": None}  # a filter that matches nothing
        found = Sessions(session).page(
            worker_id=worker_id, status=query.status, limit=query.limit, cursor=query.cursor
        )
        activity = activity_of(session, [row.id for row in found.items])
        return {
            "items": [
                session_out(row, workers[row.worker_id], activity=activity[row.id])
                for row in found.items
            ],
            "next_cursor": found.next_cursor,
        }

    return JSONResponse(await read(page))


async def end_session(request: Request) -> Response:
    """Learning (if the worker has it on and `?learn=false` is not given), shutdown
    (transcript, commit, push), then teardown. Ending an ended session is a no-op."""
    query = parse_query(request, EndQuery)
    result, saved = await end(
        request.path_params["session_id"], EndReason.REQUESTED, learn=query.learn
    )
    return JSONResponse(result, status_code=200 if saved else 502)


async def end(
    session_id: str, reason: EndReason, *, learn: bool = True
) -> tuple[dict[str, Any], bool]:
    """End a session: auto-learning if its worker has it on and `learn` is set
    (`functions.learning`), shutdown (transcript, commit, push), then teardown. Returns the session as
    `GET` shows it, and False when its work could not be saved (it is then `failed`, its
    workspace kept so ending again retries the push). An ended session is returned unchanged.
    Shared by `DELETE /v1/sessions/{id}` and the `events` function's
    `dev.vwm.session.end.requested` and the reconciler (idle, max age); `reason` goes into the
    `dev.vwm.session.ended` event. Raises `NotFoundError`, or `InvalidTransition` when the
    session is already ending."""
    view = await db(load, session_id)
    if view.session.status == SessionStatus.ENDED:
        return await db(lambda s: _out(s, session_id)), True
    await db(_transition, session_id, SessionStatus.ENDING, {})
    return await finish_ending(session_id, reason, learn=learn)


async def finish_ending(
    session_id: str, reason: EndReason, *, learn: bool = True
) -> tuple[dict[str, Any], bool]:
    """The rest of an end, for a session that is `ending`: also how the reconciler carries on
    an end that a process which died left half done (every step may run again; a session
    learns once)."""
    view = await db(load, session_id)
    handle = (
        RuntimeHandle.from_dict(view.session.runtime_state) if view.session.runtime_state else None
    )
    error: dict[str, Any] | None = None
    outcome: dict[str, Any] | None = None
    runtime = backend()
    if handle is not None and view.session.ready_at is None:
        # It never became ready: nothing of the agent's to save, only a harness to stop.
        with contextlib.suppress(RuntimeBackendError):
            await runtime.teardown(handle)
    elif handle is not None:
        try:
            # Probed first (ending is rare, a probe is cheap): a mute harness is replaced instead
            # of holding the end for the whole shutdown bound.
            handle, endpoint = await harness_of(view, probe=True)
            if learn and view.worker.auto_learning:
                await learning.learn(view, endpoint)  # never blocks the end: failures recorded
            async with client_for(endpoint) as harness:
                outcome = (await harness.shutdown()).result()
            # The shutdown stopped any running job: record how, while its log is still there.
            await _record_jobs_of(session_id, endpoint)
        except (HarnessCallError, RuntimeBackendError) as exc:
            error = {
                "code": exc.code,
                "message": exc.message,
            }
            # A failed push still reports what became of each repository.
            outcome = shutdown_result(exc.details)
        # After a failed shutdown the workspace stays, so ending again can retry the push.
        await runtime.teardown(handle, keep_workspace=error is not None)
    target = SessionStatus.ENDED if error is None else SessionStatus.FAILED
    fields: dict[str, Any] = {"result": outcome} if outcome else {}
    if error:
        fields["error"] = error
    await db(_end_jobs_and_transition, session_id, target, fields, reason)
    return await db(lambda s: _out(s, session_id)), error is None


async def _record_jobs_of(session_id: str, endpoint: HarnessEndpoint) -> None:
    for job_id in await db(_active_job_ids, session_id):
        with contextlib.suppress(HarnessCallError):
            await record_from_harness(job_id, endpoint)


def _active_job_ids(session: Session, session_id: str) -> list[str]:
    return list(
        session.scalars(
            select(Job.id).where(Job.session_id == session_id, Job.status.in_(ACTIVE_JOB_STATUSES))
        )
    )


def _end_jobs_and_transition(
    session: Session,
    session_id: str,
    to: SessionStatus,
    fields: dict[str, Any],
    reason: EndReason,
) -> None:
    """No job outlives its session's harness: one still active now never reports again."""
    gone = {
        "code": "session_ended",
        "message": "the session ended while this job ran; its harness is gone",
    }
    for job_id in _active_job_ids(session, session_id):
        fail_unrecorded(session, job_id, gone)
    row = session.get(WorkerSession, session_id)
    assert row is not None
    row = transition_session(session, row, to, **fields)
    lifecycle_events.session_ended(session, row, reason)


def shutdown_result(details: dict[str, Any]) -> dict[str, Any] | None:
    """What a failed end did, from its error's details (a failed push still reports each
    repository's outcome): `ShutdownOutcome.result`, or None when the details carry none."""
    outcome = ShutdownOutcome.from_details(details)
    return outcome.result() if outcome is not None else None


TAGS = ("sessions",)
ENDPOINTS = [
    *session_files.ENDPOINTS,
    *BUDGET_ENDPOINTS,  # a session's budget and its meter's charges: functions/budgets_api.py
    SESSION_JOBS,
    Endpoint(
        "POST",
        "/v1/sessions",
        create_session,
        "Create a session for a worker",
        body=SessionIn,
        response=SessionOut,
        status=201,
        other_statuses=(200, 202, 404, 409, 422, 503),  # 200: sent again with its key
        tags=TAGS,
    ),
    Endpoint(
        "GET",
        "/v1/sessions",
        list_sessions,
        "List sessions (newest first)",
        query=SessionQuery,
        response=SessionList,
        tags=TAGS,
    ),
    Endpoint(
        "GET",
        "/v1/sessions/{session_id}",
        get_session,
        "Get a session",
        response=SessionOut,
        tags=TAGS,
    ),
    Endpoint(
        "DELETE",
        "/v1/sessions/{session_id}",
        end_session,
        "End a session: auto-learning (if on), transcript, commit and push, then teardown",
        query=EndQuery,
        response=SessionOut,
        other_statuses=(409, 502, 503),
        tags=TAGS,
    ),
]
