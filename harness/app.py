"""The harness HTTP API (v1), built by `create_app`. Started by `python -m harness`.

Endpoints (all but ``/healthz`` and ``/metrics`` need ``Authorization: Bearer <session token>``; ``/v1/events``
also takes, instead, a prompt request the control plane signed for this session):

    GET    /healthz                        liveness, what this harness runs, event publishing
    GET    /metrics                        Prometheus metrics (docs/metrics.md)
    POST   /v1/events                      a prompt request: runs its job, answers at its end
    POST   /v1/bootstrap                   clone repos, install the pinned CLI, write instructions
    POST   /v1/jobs                        run a prompt; ``mode``: sync (JSON), stream (SSE), async (202)
    GET    /v1/jobs/{job_id}               job status and summary
    GET    /v1/jobs/{job_id}/events        SSE; resumes after ``Last-Event-ID``
    POST   /v1/jobs/{job_id}/cancel        stop a running job
    GET    /v1/files?path=                 list a directory
    GET    /v1/files/content?path=         read a file
    PUT    /v1/files/content?path=         write a file (raw body)
    DELETE /v1/files?path=[&recursive=1]   delete
    GET    /v1/skills                      the installed skills
    PUT    /v1/skills/{name}               install a skill (its archive as the body)
    DELETE /v1/skills/{name}               remove a skill
    POST   /v1/learning/commit             commit and push a learning job's notes in worker_repo
    POST   /v1/shutdown                    transcript, commit and push both repos; job events out

With ``VWM_EVENT_SINK`` (or ``K_SINK``) set, the harness also publishes every job's log as
CloudEvents through an outbox on the volume (`harness.publishing`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from eventing.harness_api import EventsHealth, HarnessHealth, ShutdownOutcome
from eventing.http_metrics import METRICS_PATH, HttpMetrics, metrics
from eventing.http_tracing import HttpTracing
from harness import routes_files, routes_skills
from harness.adapters import get_adapter
from harness.adapters.base import Adapter
from harness.bootstrap import BootstrapRequest, bootstrap
from harness.cli_install import PinnedCli
from harness.cli_version_memo import VersionMemo
from harness.errors import HarnessError, JobAlreadyRunning
from harness.http import EXCEPTION_HANDLERS, InputGuard, TokenAuth, parse_json, read_body
from harness.jobs import JobObserver, JobRequest, JobRunner
from harness.learning import LearningCommit, commit_learning
from harness.meter.service import CLI_APIS, Meter
from harness.metrics import JobMetrics
from harness.prompt_requests import PromptTurns
from harness.publishing import EventPublishing
from harness.settings import HarnessSettings
from harness.skills import Skills
from harness.sse import event_stream, resume_point
from harness.tracing import JobTracing
from harness.transcript import shutdown_repos
from harness.warm_imports import prepare_in_background
from harness.workspace import Workspace

logger = logging.getLogger(__name__)

EVENTS_PATH = "/v1/events"


class CreateJob(JobRequest):
    mode: Literal["sync", "stream", "async"] = "sync"


@dataclass
class HarnessState:
    settings: HarnessSettings
    workspace: Workspace
    adapter: Adapter
    runner: JobRunner
    cli: PinnedCli
    skills: Skills
    bootstrap_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Held by a learning commit, which may switch worker_repo's branch for a while: the
    # shutdown's save waits for it rather than commit the notes where they do not belong.
    learning_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    publishing: EventPublishing | None = None  # None: no event sink set
    prompt_turns: PromptTurns | None = None


def _state(request: Request) -> HarnessState:
    return request.app.state.harness


async def health(request: Request) -> Response:
    state = _state(request)
    answer = HarnessHealth(
        status="ok",
        cli=state.adapter.kind,
        bootstrapped=state.workspace.session_repo.is_dir(),
        running_job_id=state.runner.current.id if state.runner.current else None,
        # What confines the CLI: "bwrap", or "none" (the pod, in production).
        sandbox=state.settings.sandbox.mode,
        events=await _events_health(state),
    )
    return JSONResponse(answer.model_dump(mode="json"))


async def _events_health(state: HarnessState) -> EventsHealth:
    if state.publishing is None:
        return EventsHealth(sink=None, pending=0, dead_letters=0, relay_running=False)
    return EventsHealth.model_validate(await state.publishing.health())


async def bootstrap_workspace(request: Request) -> Response:
    state = _state(request)
    body = await parse_json(request, BootstrapRequest, state.settings.server.max_request_bytes)
    if (running := state.runner.current) is not None:
        raise JobAlreadyRunning(
            f"job {running.id} is running; bootstrap again when it has finished",
            running_job_id=running.id,
        )
    async with state.bootstrap_lock:  # one bootstrap at a time per workspace
        report = await bootstrap(
            state.workspace,
            body,
            state.adapter.instruction_file_name,
            allow_local=state.settings.git.allow_local,
            cli=state.cli,
        )
    state.runner.warm_up()  # the CLI's server, if it has one, while the caller moves on
    prepare_in_background()  # what the first prompt imports, likewise
    return JSONResponse(report.to_dict())


async def learning_commit(request: Request) -> Response:
    """`POST /v1/learning/commit`: commit and push what a learning job left in worker_repo
    (`harness.learning`); a failed push is in the answer's `error`, not an HTTP error."""
    state = _state(request)
    body = await parse_json(request, LearningCommit, state.settings.server.max_request_bytes)
    if (running := state.runner.current) is not None:
        raise JobAlreadyRunning(
            f"job {running.id} is running; commit what was learned when it has finished",
            running_job_id=running.id,
        )
    async with state.learning_lock:
        outcome = await commit_learning(
            state.workspace, body, git=state.settings.git, session_id=state.settings.session_id
        )
    return JSONResponse(outcome.model_dump(mode="json"))


async def create_job(request: Request) -> Response:
    state = _state(request)
    body = await parse_json(request, CreateJob, state.settings.server.max_request_bytes)
    await state.runner.ready_cli()
    job, created = state.runner.start(JobRequest(**body.model_dump(exclude={"mode"})))
    match body.mode:
        case "async":
            return JSONResponse(job.to_dict(), status_code=202 if created else 200)
        case "stream":
            return event_stream(job.log, 0, state.settings.server.heartbeat_s)
        case _:
            await state.runner.wait(job)
            return JSONResponse(job.to_dict())


async def receive_event(request: Request) -> Response:
    """`POST /v1/events`: one `dev.vwm.prompt.requested` (binary or structured mode), answered
    when its job has ended (`harness.prompt_requests`). With the bearer token (the embedded
    broker's delivery) the answer is the job's state; a delivery authenticated by the event's
    signature alone (a Knative Trigger's) gets 202 with no body, which Knative reads as done
    (a 200's body would be re-injected as a reply event)."""
    state = _state(request)
    turns = state.prompt_turns
    assert turns is not None  # set by the lifespan
    body = await read_body(request, state.settings.server.max_request_bytes)
    if _bears_token(request, state.settings.server.session_token):
        job = await turns.run(turns.decode(request.headers, body))
        return JSONResponse(job.to_dict())  # whatever its status: the request was handled
    await turns.run(turns.decode_signed(request.headers, body))
    return Response(status_code=202)


def _bears_token(request: Request, token: str) -> bool:
    """Whether the request carries this harness's bearer token. Another Authorization (a
    platform's own token on a Trigger's delivery) is not a refusal here: the event's signature
    may still authenticate it."""
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        presented.strip().encode(), token.encode()
    )


class TokenAuthExceptEvents:
    """`TokenAuth` for every path but ``/v1/events``, whose handler authenticates each delivery
    itself: by the bearer token, or by the prompt request's signature."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self._open = app
        self._guarded = TokenAuth(app, token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        own_auth = (
            scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == EVENTS_PATH
        )
        await (self._open if own_auth else self._guarded)(scope, receive, send)


async def get_job(request: Request) -> Response:
    job = _state(request).runner.get(request.path_params["job_id"])
    return JSONResponse(job.to_dict())


async def job_events(request: Request) -> Response:
    state = _state(request)
    after = resume_point(request)  # a malformed one is 400 whether or not the job exists
    job = state.runner.get(request.path_params["job_id"])
    return event_stream(job.log, after, state.settings.server.heartbeat_s)


async def cancel_job(request: Request) -> Response:
    job = await _state(request).runner.cancel(request.path_params["job_id"])
    return JSONResponse(job.to_dict())


async def shutdown(request: Request) -> Response:
    state = _state(request)
    await state.runner.close()
    repos = _save_repos(state)
    if state.publishing is None:
        return _shutdown_answer(await repos, events_pending=0)
    # The final events leave while the repositories are saved; the wait for them is bounded.
    # `events_pending` (also on a failed save's error details) tells the control plane whether
    # they left before the volume goes.
    settled = asyncio.create_task(state.publishing.settle())
    try:
        outcome = await repos
    except HarnessError as exc:
        await settled
        exc.details["events_pending"] = await state.publishing.pending()
        raise
    await settled
    return _shutdown_answer(outcome, events_pending=await state.publishing.pending())


async def _save_repos(state: HarnessState) -> dict[str, Any]:
    async with state.learning_lock:
        return await shutdown_repos(
            state.workspace, git=state.settings.git, session_id=state.settings.session_id
        )


def _shutdown_answer(outcome: dict[str, Any], *, events_pending: int) -> Response:
    answer = ShutdownOutcome.model_validate({**outcome, "events_pending": events_pending})
    return JSONResponse(answer.model_dump(mode="json"))


def _traced(inner: JobObserver | None, settings: HarnessSettings) -> JobTracing:
    """The job observer that makes the job and model-call spans (`harness.tracing`)."""
    provider = settings.cli.provider
    server = None
    if provider is not None:
        url = urlsplit(provider.base_url)
        if url.hostname:
            server = (url.hostname, url.port or (443 if url.scheme == "https" else 80))
    return JobTracing(
        inner,
        agent=settings.worker or settings.cli.kind,
        session_id=settings.session_id,
        cli=settings.cli.kind,
        api=CLI_APIS[settings.cli.kind].value,
        server=server,
    )


def create_app(settings: HarnessSettings) -> Starlette:
    workspace = Workspace(settings.workspace)
    adapter = get_adapter(settings.cli.kind)
    cli = PinnedCli(
        settings.cli.kind,
        settings.cli.binary,
        settings.cli.version,
        workspace,
        install_timeout_s=settings.cli.install_timeout_s,
        memo=VersionMemo(settings.cli.version_memo) if settings.cli.version_memo else None,
    )
    skills = Skills(workspace, adapter.skills_dir(workspace.cli_home))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        workspace.ensure_dirs()
        # A restart finds the pinned CLI its volume already holds; an install waits for bootstrap.
        # Not awaited here: the image CLI's `--version` (a process of its own, tens of ms) runs
        # while the harness starts and the control plane's bootstrap clones. What needs the CLI
        # (bootstrap, a job: `JobRunner.ready_cli`) waits for it on the CLI's lock.
        finding = asyncio.create_task(cli.find(), name="find-cli")
        meter = Meter(
            settings.cli.provider,
            os.environ,
            api=CLI_APIS[adapter.kind],
            connect_timeout_s=settings.limits.provider_connect_timeout_s,
        )
        await meter.start()
        runner = JobRunner(settings, workspace, adapter, cli, meter=meter)
        runner.recover()
        runner.warm_up()  # a restarted harness of a bootstrapped session
        if workspace.session_repo.is_dir():
            prepare_in_background()
        publishing = None
        if settings.events.enabled:  # after recover: it republishes the jobs recover finished
            publishing = await EventPublishing.open(
                settings.events,
                workspace,
                runner,
                session_id=settings.session_id,
                session_token=settings.server.session_token,
            )
        # Counts, traces (the job's span, whose context its events carry), then publishes.
        runner.observer = JobMetrics(_traced(runner.observer, settings))
        turns = PromptTurns(
            runner,
            settings.session_id,
            settings.server.session_token,
            settings.limits.prompt_wait_s,
            charges=settings.charges,
        )
        app.state.harness = HarnessState(
            settings,
            workspace,
            adapter,
            runner,
            cli,
            skills,
            publishing=publishing,
            prompt_turns=turns,
        )
        logger.info("harness ready", extra={"cli": adapter.kind, "workspace": str(workspace.root)})
        try:
            yield
        finally:
            finding.cancel()  # a harness stopped at once need not wait for the CLI's answer
            await runner.close()
            await meter.close()
            if publishing is not None:
                await publishing.close()

    routes = [
        Route("/healthz", health, methods=["GET"]),
        Route(METRICS_PATH, metrics, methods=["GET"]),  # public, as /healthz (docs/metrics.md)
        Route("/v1/bootstrap", bootstrap_workspace, methods=["POST"]),
        Route("/v1/jobs", create_job, methods=["POST"]),
        Route(EVENTS_PATH, receive_event, methods=["POST"]),
        Route("/v1/jobs/{job_id}", get_job, methods=["GET"]),
        Route("/v1/jobs/{job_id}/events", job_events, methods=["GET"]),
        Route("/v1/jobs/{job_id}/cancel", cancel_job, methods=["POST"]),
        *routes_files.routes(
            lambda request: _state(request).workspace,
            lambda request: _state(request).settings.limits.max_file_bytes,
        ),
        *routes_skills.routes(lambda request: _state(request).skills),
        Route("/v1/learning/commit", learning_commit, methods=["POST"]),
        Route("/v1/shutdown", shutdown, methods=["POST"]),
    ]
    return Starlette(
        routes=routes,
        middleware=[
            Middleware(HttpTracing, routes=routes),  # outermost: refusals are traced too
            Middleware(HttpMetrics, routes=routes),  # refusals count too
            Middleware(TokenAuthExceptEvents, token=settings.server.session_token),
            Middleware(InputGuard),
        ],
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        lifespan=lifespan,
    )
