"""A session's harness as the control plane sees it: how to build its spec from the worker and
runtime rows, start it, and reach it again (relaunching it if it died or `vwm up` restarted).

Used by the `sessions` and `prompts` functions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from eventing.cli_versions import EXACT_VERSION_RULE, is_exact_version
from eventing.tracing import SECRET_OTEL_VARIABLES, harness_tracing_env
from functions.budgets import charge_url
from functions.context import backend, db, read, services, settings, token_key
from functions.db.errors import ConflictError
from functions.db.models import (
    ACTIVE_JOB_STATUSES,
    Job,
    Runtime,
    SessionStatus,
    Worker,
    WorkerSession,
)
from functions.db.repositories import Runtimes, Sessions, Settings, Workers
from functions.harness_client import HarnessClient, HarnessUnavailable
from functions.repo_policy import allow_local_repos
from functions.runtime.base import (
    HarnessEndpoint,
    HarnessSpec,
    IdleStopper,
    PoolShape,
    RuntimeHandle,
    idle_stopped,
    marked_idle,
)
from functions.runtime.errors import HarnessNotReady, HarnessStartFailed

logger = logging.getLogger(__name__)

GLOBAL_INSTRUCTIONS = "global_instructions"


@dataclass(frozen=True)
class SessionView:
    """The rows a session needs, read in one transaction and detached from it."""

    session: WorkerSession
    worker: Worker
    runtime: Runtime
    # The repo URL policy's local rule now: the harness gets VWM_GIT_ALLOW_LOCAL from it.
    allow_local_repos: bool = False


def load(session: Session, session_id: str) -> SessionView:
    row = Sessions(session).get(session_id)
    worker = Workers(session).get_by_id(row.worker_id)
    runtime = Runtimes(session).get_by_id(worker.runtime_id)
    allow_local = allow_local_repos(session, settings().allow_local_repos)
    return SessionView(row, worker, runtime, allow_local_repos=allow_local)


def global_instructions(session: Session) -> tuple[str, int]:
    """The hot system instructions and their version (0 when none are set)."""
    row = Settings(session).get(GLOBAL_INSTRUCTIONS)
    if row is None:
        return "", 0
    return (row.value if isinstance(row.value, str) else str(row.value)), row.version


def require_credential(runtime: Runtime) -> str:
    """The model key `runtime.credential_ref` names, read now and never stored."""
    value = os.environ.get(runtime.credential_ref or "")
    if value is None:
        raise ConflictError(
            f"runtime {runtime.name!r} names credential {runtime.credential_ref!r}, which is not "
            "set in the control plane's environment; set it and try again",
            code="credential_missing",
        )
    return value


def harness_spec(view: SessionView) -> HarnessSpec:
    runtime, worker = view.runtime, view.worker
    credential_env: dict[str, str] = {}
    if runtime.credential_ref:
        credential_env["VWM_PROVIDER_API_KEY"] = require_credential(runtime)
    # The harness's heartbeat is what the control plane's silence bound on its streams counts in.
    current = settings()
    extra: dict[str, str] = {"VWM_HEARTBEAT_S": f"{current.heartbeat_s:g}"}
    if current.harness_control_url:
        # Where the meter charges the calls of jobs that reach the harness without passing
        # through dispatch (prompt requests a Trigger delivers), so budgets hold for them too.
        extra["VWM_CHARGE_URL"] = charge_url(view.session.id)
        credential_env["VWM_CHARGE_TOKEN"] = token_key().charge_token(view.session.id)
    if current.harness_event_sink:
        # The harness publishes its job events there, through an outbox on its volume.
        extra["VWM_EVENT_SINK"] = current.harness_event_sink
    # Traces as the control plane's (docs/tracing.md): its OTEL_* settings but the service
    # name; the exporter's headers (a collector's credentials) travel as secrets.
    for name, value in harness_tracing_env(os.environ).items():
        (credential_env if name in SECRET_OTEL_VARIABLES else extra)[name] = value
    if runtime.prices:
        import json

        extra["VWM_PRICES"] = json.dumps(runtime.prices)
    # How long a prompt request waits for its turn on a busy session before it fails.
    extra["VWM_PROMPT_WAIT_S"] = f"{current.prompt_wait_s:g}"
    timeout = job_timeout_s(view)
    shape = runtime_shape(runtime)
    return HarnessSpec(
        session_id=view.session.id,
        cli=runtime.cli,
        cli_bin=os.environ.get(f"VWM_{runtime.cli.upper()}_BIN"),
        cli_version=pinned_cli_version(runtime),
        model=worker.model or runtime.default_model,
        provider_base_url=runtime.provider_base_url,
        credential_env=credential_env,
        job_timeout_s=timeout,
        extra_env=extra,
        git_allow_local=view.allow_local_repos,
        image=shape.image,
        worker=worker.name,
        cpu=shape.cpu,
        memory=shape.memory,
    )


def runtime_shape(runtime: Runtime) -> PoolShape:
    """The image, CPU and memory the runtime gives its harnesses (None: the backend's)."""
    limits = runtime.limits or {}
    return PoolShape(runtime.image, _quantity(limits.get("cpu")), _quantity(limits.get("memory")))


def pinned_cli_version(runtime: Runtime) -> str:
    """The version the runtime pins, which its harness runs (installing it if its image has
    another). The admin API takes exact versions only; a row written before it checked them is
    refused here, with what to do, rather than passed to a harness that would refuse to start."""
    if not is_exact_version(runtime.cli_version):
        raise ConflictError(
            f"runtime {runtime.name!r} has cli_version {runtime.cli_version!r}, which is not "
            f"{EXACT_VERSION_RULE}; set it with PATCH /v1/admin/runtimes/{runtime.name}",
            code="cli_version_invalid",
            runtime=runtime.name,
        )
    return runtime.cli_version


def _quantity(value: Any) -> str | None:
    """A runtime's CPU or memory limit as a Kubernetes quantity (``2``, ``500m``, ``4Gi``)."""
    return None if value is None else str(value)


def job_timeout_s(view: SessionView) -> float | None:
    """The bound of the session's jobs the worker or its runtime sets (None: the harness's)."""
    worker, runtime = view.worker, view.runtime
    timeout = (worker.timeouts or {}).get("job_s") or (runtime.limits or {}).get("job_timeout_s")
    return float(timeout) if timeout else None


async def reach(session_id: str, *, probe: bool = False) -> tuple[SessionView, HarnessEndpoint]:
    """The harness of a ready session (a session in any other state takes no prompts)."""
    view = await read(load, session_id)
    if view.session.status != SessionStatus.READY:
        raise ConflictError(
            f"session {session_id} is {view.session.status}; only a ready session takes prompts",
            code="session_ended"
            if view.session.status in ("ending", "ended")
            else "session_not_ready",
        )
    _, endpoint = await harness_of(view, probe=probe)
    return view, endpoint


async def harness_of(
    view: SessionView, *, probe: bool = False
) -> tuple[RuntimeHandle, HarnessEndpoint]:
    """Where the session's harness answers, relaunched first on the same workspace if its
    process is gone. A running harness is not probed (a prompt should not pay for it) unless
    `probe` is set: callers probe after a call failed to connect, which also relaunches a
    harness that is alive but mute."""
    handle = RuntimeHandle.from_dict(view.session.runtime_state)
    runtime = backend()
    timeout_s = settings().harness_ready_timeout_s
    # One stopped for being idle (or being stopped now) is woken, as Knative's activator would.
    if not (probe or idle_stopped(handle)) and await runtime.status(handle) == "running":
        return handle, runtime.endpoint(handle)
    handle = await relaunch(view, handle)
    try:
        return handle, await runtime.wait_ready(handle, timeout_s)
    except (HarnessStartFailed, HarnessNotReady):
        # It died between the status check and now (e.g. killed a moment ago): once more.
        handle = await relaunch(view, handle)
        return handle, await runtime.wait_ready(handle, timeout_s)


async def relaunch(view: SessionView, handle: RuntimeHandle) -> RuntimeHandle:
    """`ensure_running` on the session's handle, and the possibly new handle saved. If another
    call replaced the harness since `handle` was read, that harness is the answer.

    One relaunch at a time per session in this app (`Services.relaunch_locks`): calls that find
    the same hung harness at once (a prompt's recorder, a files call) must not each replace it,
    the later one killing the harness the earlier one just started (they share the workspace)."""
    async with services().relaunch_locks.hold(view.session.id):
        stored = await db(_stored_handle, view.session.id)
        if stored and stored != handle.to_dict():
            handle = RuntimeHandle.from_dict(stored)
            if not idle_stopped(handle):
                return handle
        handle = await backend().ensure_running(handle, harness_spec(view))
        await db(_save_handle, view.session.id, handle.to_dict())
        return handle


# How long an idle stop waits after marking the handle before it looks at the session again.
IDLE_SETTLE_S = 0.5


async def stop_if_idle(session_id: str, idle_s: float) -> bool:
    """Stop the harness of a ready session that has run no job for `idle_s` and has been up at
    least that long, keeping its workspace (`IdleStopper`); the next call that needs it
    relaunches it (`harness_of`). True when it was stopped.

    The handle is marked first, so that a call reading the session from then on waits for
    the stop (`relaunch` holds the same lock) and relaunches it; a prompt that read it before
    the mark and is about to queue its job gets `IDLE_SETTLE_S` to do so, and the harness is
    stopped only if the session is still idle after that. (A prompt dispatched later still finds
    the harness gone and relaunches it: `job_dispatch.dispatch` retries a refused connection.)"""
    runtime = backend()
    if not isinstance(runtime, IdleStopper):
        return False
    async with services().relaunch_locks.hold(session_id):
        found = await read(idle_sessions, idle_s, session_id)
        if not found or idle_stopped(handle := found[0][1]):
            return False
        uptime = await asyncio.to_thread(runtime.uptime_s, handle)
        if uptime is None or uptime < idle_s:  # gone (the reconciler relaunches it), or woken
            return False
        marked = marked_idle(handle)
        await db(_save_handle, session_id, marked.to_dict())
        await asyncio.sleep(IDLE_SETTLE_S)
        if not await read(idle_sessions, idle_s, session_id):  # a prompt came meanwhile
            await db(_save_handle, session_id, handle.to_dict())
            return False
        stopped = await runtime.stop_idle(marked)
        await db(_save_handle, session_id, stopped.to_dict())
        logger.info("stopped an idle harness", extra={"session_id": session_id})
        return True


def idle_sessions(
    session: Session, idle_s: float, session_id: str | None = None
) -> list[tuple[str, RuntimeHandle]]:
    """Ready sessions (or the one `session_id`) that run no job and whose last job ended, or
    that became ready, more than `idle_s` ago, with their handles (marked `idle_stopped` or
    not: callers tell)."""
    before = datetime.now(UTC) - timedelta(seconds=idle_s)
    busy = select(Job.session_id).where(Job.status.in_(ACTIVE_JOB_STATUSES))
    query = select(WorkerSession.id, WorkerSession.runtime_state).where(
        WorkerSession.status == SessionStatus.READY,
        WorkerSession.last_activity_at < before,
        WorkerSession.id.not_in(busy),
    )
    if session_id is not None:
        query = query.where(WorkerSession.id == session_id)
    return [
        (row.id, RuntimeHandle.from_dict(row.runtime_state))
        for row in session.execute(query)
        if row.runtime_state
    ]


def _stored_handle(session: Session, session_id: str) -> dict[str, Any] | None:
    row = session.get(WorkerSession, session_id)
    return row.runtime_state if row is not None else None


async def recover(session_id: str) -> bool:
    """After a call to the session's harness got no answer in time: probe it, and replace it if it
    is hung, so the next call finds a harness that answers. True when it was replaced (a job it
    ran is lost with it). Best effort: the caller reports the original failure
    (`harness_unavailable`, retryable) whatever happens here."""
    try:
        view = await db(load, session_id)
        if view.session.status == SessionStatus.READY and view.session.runtime_state:
            before = view.session.runtime_state
            handle, _ = await harness_of(view, probe=True)
            return handle.to_dict() != before
    except Exception:  # the next call tries again; this one already failed
        logger.warning("could not replace a hung harness", exc_info=True)
    return False


@contextlib.asynccontextmanager
async def recovering(session_id: str) -> AsyncIterator[None]:
    """Calls to the session's harness inside recover it when one gets no answer in time."""
    try:
        yield
    except HarnessUnavailable:
        await recover(session_id)
        raise


def _save_handle(session: Session, session_id: str, state: dict[str, Any]) -> None:
    row = session.get(WorkerSession, session_id)
    if row is not None:
        row.runtime_state = state


def bootstrap_body(view: SessionView, system_instructions: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "worker_repo": {"url": view.worker.repo_url, "branch": view.worker.repo_branch},
        "system_instructions": system_instructions,
        "worker_instructions": view.worker.instructions,
        "model": view.worker.model or view.runtime.default_model,
    }
    if view.session.session_repo_url:
        body["session_repo"] = {
            "url": view.session.session_repo_url,
            "branch": view.session.session_repo_branch or "main",
        }
    return body


def client_for(endpoint: HarnessEndpoint) -> HarnessClient:
    return HarnessClient(endpoint.url, endpoint.token, settings().harness)
