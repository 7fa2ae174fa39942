"""Job lifecycle: run one prompt through the CLI, one job at a time per session.

`JobRunner` owns the session's single job slot, the wall-clock timeout, cancellation, the event
log of each job and the resume state (the CLI session id is saved the moment the CLI announces it,
so even a first turn that dies can be resumed). It sits between the HTTP layer (`harness.app`),
the transport (`harness.transport`) and the adapters (`harness.adapters`), which know nothing of
each other.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import ConfigDict, Field

from eventing.agent_events import AgentEvent, EventKind, RunSummary, Usage
from eventing.budgets import JobBudget
from eventing.harness_api import JobState
from eventing.job_events import JobEvent, JobEventKind, JobStatus
from eventing.lazy_models import LazyModel
from eventing.model_calls import ModelCall
from harness import sandbox
from harness.adapters.base import Adapter, Invocation, Parser, RunSpec
from harness.cli_install import PinnedCli
from harness.errors import HarnessError, JobAlreadyRunning, JobExpired, NotBootstrapped, NotFound
from harness.event_log import EventLog
from harness.meter.calls import JobCalls
from harness.meter.summary import metered_summary
from harness.settings import HarnessSettings
from harness.transport import CliProcess
from harness.workspace import Workspace

if TYPE_CHECKING:  # the meter's HTTP stack is the app's to load, not the runner's
    from harness.meter.service import Meter
    from harness.opencode_server import OpencodeServer, ServerInvocation

logger = logging.getLogger(__name__)

# Only these variables of the harness's own environment reach the CLI: the session token and any
# other secret of the harness must not be readable by the agent's shell commands. Vendor keys pass
# through for workers that use the vendor's endpoint (a configured provider overrides them).
_INHERITED_ENV = ("PATH", "LANG", "LC_ALL", "TZ", "SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS")
_VENDOR_ENV = (
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_BASE_URL",
    "OPENAI_API_KEY",
    "CODEX_API_KEY",
    "GEMINI_API_KEY",
    "GOOGLE_API_KEY",
    "GOOGLE_GEMINI_BASE_URL",
)
# HOME points into the workspace, so the agent's own git commits need an identity from here.
_AGENT_GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "VWM agent",
    "GIT_AUTHOR_EMAIL": "agent@vwm.invalid",
    "GIT_COMMITTER_NAME": "VWM agent",
    "GIT_COMMITTER_EMAIL": "agent@vwm.invalid",
}


def cli_environment(adapter_env: dict[str, str], *, vendor_keys: bool) -> dict[str, str]:
    """The whole environment of a CLI run: the few inherited variables, then the adapter's."""
    inherited = _INHERITED_ENV + (_VENDOR_ENV if vendor_keys else ())
    env = {name: os.environ[name] for name in inherited if name in os.environ}
    env.setdefault("LANG", "C.UTF-8")
    env["NO_COLOR"] = "1"
    env.update(_AGENT_GIT_IDENTITY)
    env.update(adapter_env)
    return env


# Job ids name files on the volume: only this alphabet, so an id can never be a path.
_JOB_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
_JOB_ID = re.compile(_JOB_ID_PATTERN)


class JobRequest(LazyModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=512_000)
    job_id: str | None = Field(default=None, pattern=_JOB_ID_PATTERN)
    model: str | None = Field(default=None, max_length=200)
    timeout_s: float | None = Field(default=None, gt=0, le=86_400)
    new_session: bool = False
    # The id of the `dev.vwm.prompt.requested` event the job runs (harness.prompt_requests):
    # every event of the job carries it as `causationid`.
    causation_id: str | None = Field(default=None, min_length=1, max_length=200)
    # Epoch seconds after which the job must not start: the caller gave up waiting by then (e.g.
    # this harness was stopped and read the request late). Compared with this machine's clock,
    # so the caller adds a margin for skew.
    not_after: float | None = Field(default=None, gt=0)
    # Set by the control plane when a budget applies to the session (`eventing.budgets`): the
    # meter charges each call there and refuses calls once it is spent.
    budget: JobBudget | None = None

    def check_not_expired(self, now: float) -> None:
        if self.not_after is not None and now > self.not_after:
            raise JobExpired(
                f"the job start arrived {now - self.not_after:.1f} s after its deadline "
                "(not_after, on this harness's clock); its caller stopped waiting, so it was not "
                "run: send it again",
                job_id=self.job_id,
                not_after=self.not_after,
                now=round(now, 3),
            )


@dataclass
class Job:
    id: str
    prompt: str
    log: EventLog
    status: JobStatus = JobStatus.RUNNING
    created_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    summary: RunSummary | None = None
    error: dict[str, Any] | None = None
    exit_code: int | None = None
    task: asyncio.Task[None] | None = None
    cancel_requested: bool = False
    # Its final event is in the publishing outbox (`harness.publishing`); kept in the meta file
    # so a restart republishes, from the log, every job that did not get that far.
    published: bool = False
    causation_id: str | None = None
    # The W3C trace context of the job's span (``traceparent``, ``tracestate``: `harness.tracing`),
    # which every event the job publishes carries; kept in the meta file for a republish.
    trace_context: dict[str, str] | None = None

    def state(self) -> JobState:
        """The job as the API answers it (the shared contract, `eventing.harness_api`)."""
        return JobState(
            job_id=self.id,
            status=self.status,
            created_at=self.created_at,
            finished_at=self.finished_at,
            exit_code=self.exit_code,
            summary=self.summary,
            error=self.error,
            last_seq=self.log.last_seq,
        )

    def to_dict(self) -> dict[str, Any]:
        return self.state().model_dump(mode="json")


class RawOutput:
    """The CLI's stdout exactly as it came, kept on the volume up to `limit` bytes per job (for
    telemetry and debugging); past the limit a marker says how much was left out."""

    def __init__(self, path: Path, limit: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("ab")
        self._left = limit
        self._dropped = 0

    def write(self, line: bytes) -> None:
        if len(line) + 1 <= self._left:
            self._file.write(line + b"\n")
            self._left -= len(line) + 1
        else:
            self._dropped += len(line) + 1

    def close(self) -> None:
        if self._dropped:
            self._file.write(f"[vwm: {self._dropped} more bytes of output not kept]\n".encode())
        self._file.close()


class JobObserver(Protocol):
    """Told of every entry a job's log gains, as it is appended, and of each job's end once its
    meta file says how it ended. Called synchronously from the job's task: it must return at
    once and never raise (what it raises is logged and the job goes on). `harness.publishing`
    is the one observer: it turns the log into CloudEvents through its outbox."""

    def on_log(self, job: Job, entry: JobEvent) -> None: ...

    def on_finished(self, job: Job) -> None: ...


@dataclass(frozen=True)
class _PreparedRun:
    spec: RunSpec
    invocation: Invocation
    parser: Parser


class JobRunner:
    def __init__(
        self,
        settings: HarnessSettings,
        workspace: Workspace,
        adapter: Adapter,
        cli: PinnedCli,
        *,
        observer: JobObserver | None = None,
        meter: Meter | None = None,
    ) -> None:
        self._settings = settings
        # The CLI's own long-lived server (OpenCode's), prompted over HTTP; None: a process a run.
        self._server = _cli_server(adapter, settings, workspace)
        self._warming: asyncio.Task[None] | None = None
        # Between the CLI and its provider (`harness.meter`); None only where a test runs the
        # runner alone: the CLI then gets the provider itself.
        self._meter = meter
        self._ws = workspace
        self._adapter = adapter
        self._cli = cli
        self._jobs: dict[str, Job] = {}
        self._current: Job | None = None
        # Set after `recover` by the app when publishing is on (it republishes what recover
        # finished from the logs, so it need not hear of it here).
        self.observer = observer

    @property
    def current(self) -> Job | None:
        return self._current if self._current and not self._current.status.finished else None

    # -- starting and finding jobs ------------------------------------------------------------

    def start(self, request: JobRequest) -> tuple[Job, bool]:
        """Start a job; returns it and whether it is new (False: an existing job with that id)."""
        try:  # before anything else: an expired start runs nothing
            request.check_not_expired(time.time())
        except JobExpired:
            logger.warning("refused an expired job start", extra={"job_id": request.job_id})
            raise
        if request.job_id and (existing := self._find(request.job_id)) is not None:
            return existing, False
        if (running := self.current) is not None:
            raise JobAlreadyRunning(
                f"job {running.id} is still running; wait for it to finish or cancel it "
                "(one job at a time per session)",
                running_job_id=running.id,
            )
        if not self._ws.session_repo.is_dir():
            raise NotBootstrapped("the workspace is not bootstrapped yet; POST /v1/bootstrap first")
        # Set the run up before accepting the job, so a config problem is a 4xx, not a failed job.
        run = self._prepare(request)
        job_id = request.job_id or f"job_{uuid.uuid4().hex}"
        log = EventLog(
            job_id,
            self._ws.jobs_dir / f"{job_id}.jsonl",
            queue_size=self._settings.limits.subscriber_queue,
        )
        job = Job(id=job_id, prompt=request.prompt, log=log, causation_id=request.causation_id)
        self._jobs[job_id] = job
        self._current = job
        self._save_meta(job)
        job.task = asyncio.create_task(self._run(job, request, run), name=f"job-{job_id}")
        return job, True

    async def ready_cli(self) -> None:
        """Before a job of a bootstrapped workspace: the CLI at its pinned version, installed
        now if bootstrap did not (a harness restarted after its runtime's version changed; the
        control plane bootstraps a session only when it starts). Raises CliInstallFailed."""
        if self._ws.session_repo.is_dir():
            await self._cli.ensure()

    def find(self, job_id: str) -> Job | None:
        """The job with that id, running or finished (from its meta file after a restart)."""
        return self._find(job_id)

    def refuse(self, request: JobRequest, error: dict[str, Any]) -> Job:
        """Record a job that will never run (it could not get its turn, or came too late): its
        log holds only its end, failed with `error`, and it is published like any other. Kept
        on the volume, so a later start with its id (a redelivery) finds it ended, and the
        prompt never runs after its sender was told it failed."""
        if request.job_id is None:
            raise ValueError("only a job with an id can be refused")
        if (existing := self._find(request.job_id)) is not None:
            return existing
        log = EventLog(
            request.job_id,
            self._ws.jobs_dir / f"{request.job_id}.jsonl",
            queue_size=self._settings.limits.subscriber_queue,
        )
        job = Job(
            id=request.job_id,
            prompt=request.prompt,
            log=log,
            causation_id=request.causation_id,
            summary=RunSummary(is_error=True, error=error["message"]),
        )
        self._jobs[job.id] = job
        self._finish(job, JobStatus.FAILED, error=error, duration_ms=0)
        return job

    def get(self, job_id: str) -> Job:
        job = self._find(job_id)
        if job is None:
            raise NotFound(f"no job {job_id!r} in this session", job_id=job_id)
        return job

    async def wait(self, job: Job) -> Job:
        if job.task is not None:
            await asyncio.shield(job.task)
        return job

    async def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        if not job.status.finished and job.task is not None:
            job.cancel_requested = True
            job.task.cancel()
            await asyncio.gather(job.task, return_exceptions=True)
        return job

    async def close(self) -> None:
        """Stop a running job (harness shutting down; its log records the cancellation), then
        the CLI's server if there is one."""
        if (job := self.current) is not None:
            await self.cancel(job.id)
        if self._warming is not None:
            self._warming.cancel()
            await asyncio.gather(self._warming, return_exceptions=True)
        if self._server is not None:
            await self._server.close()

    def recover(self) -> None:
        """After a restart: jobs the previous process left running can never finish; say so."""
        for meta_path in sorted(self._ws.jobs_dir.glob("*.json")):
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if meta.get("status") != JobStatus.RUNNING:
                continue
            job = self._load(meta["job_id"])
            if job is None:
                continue
            job.log.reopen()
            self._finish(
                job,
                JobStatus.FAILED,
                error={
                    "code": "harness_restarted",
                    "message": "the harness restarted while this job ran; send the prompt again "
                    "(the CLI session resumes)",
                },
            )

    # -- running -----------------------------------------------------------------------------

    def _prepare(self, request: JobRequest, *, fresh: bool = False) -> _PreparedRun:
        state = self._ws.load_state()
        resume_id = None if request.new_session or fresh else state.get("cli_session_id")
        checkpoint = state.get("usage_checkpoint") or {}
        baseline = (
            Usage(**checkpoint["usage"])
            if resume_id and checkpoint.get("cli_session_id") == resume_id
            else None
        )
        spec = self._spec(request, resume_id)
        self._adapter.write_config(spec)
        invocation = self._adapter.invocation(spec)
        parser = self._adapter.new_parser(usage_baseline=baseline, prices=self._settings.cli.prices)
        return _PreparedRun(spec, invocation, parser)

    async def _run(self, job: Job, request: JobRequest, run: _PreparedRun) -> None:
        started = time.monotonic()
        self._append(
            job,
            JobEventKind.JOB_STARTED,
            {
                "prompt": request.prompt,
                "cli": self._adapter.kind,
                "resume_id": run.spec.resume_id,
                "model": run.spec.model,  # asked for; the summary has the one reported
                "cli_version": self._cli.running_version,
            },
        )
        timeout_s = request.timeout_s or self._settings.limits.job_timeout_s
        status, error = JobStatus.FAILED, None
        calls = self._open_calls(job, request.budget)
        check = (
            asyncio.create_task(self._meter.check_provider(calls), name=f"check-provider-{job.id}")
            if self._meter is not None and calls is not None
            else None
        )
        try:
            async with asyncio.timeout(timeout_s):
                stderr_tail = await self._attempt(job, run)
                if self._resume_was_refused(run, job.exit_code, stderr_tail):
                    run = self._start_over(job, request, run)
                    await self._attempt(job, run)
            status = JobStatus.FAILED if run.parser.summary.is_error else JobStatus.SUCCEEDED
            if run.parser.summary.is_error:
                error = {
                    "code": "cli_failed",
                    "message": run.parser.summary.error or "the CLI run failed",
                }
        except TimeoutError:
            status = JobStatus.TIMEOUT
            error = {
                "code": "timeout",
                "message": (
                    f"the job ran longer than {timeout_s:g} s and was stopped; is the model "
                    "endpoint reachable? raise timeout_s for long tasks"
                ),
            }
        except asyncio.CancelledError:
            if calls is not None and calls.stop_reason is not None and not job.cancel_requested:
                status, error = JobStatus.FAILED, calls.stop_reason  # the meter stopped it
            else:
                status = JobStatus.CANCELLED
                error = {"code": "cancelled", "message": "the job was cancelled"}
        except HarnessError as exc:  # the transport's errors too
            error = {"code": exc.code, "message": exc.message, "details": _jsonable(exc.details)}
        except Exception as exc:  # the job must end with a record whatever broke
            logger.exception("job crashed", extra={"job_id": job.id})
            error = {"code": "internal", "message": f"the harness failed running the job: {exc}"}
        parser = run.parser
        if status is JobStatus.SUCCEEDED and (usage := parser.usage_checkpoint) is not None:
            self._update_state(
                usage_checkpoint={
                    "cli_session_id": parser.summary.cli_session_id,
                    "usage": usage.model_dump(),
                }
            )
        if check is not None:
            check.cancel()
        summary = parser.summary
        if calls is not None and calls.budget is not None:
            await calls.budget.settle(
                summary.cost_usd if summary.cost_source == "reported" else None
            )
        if calls is not None:
            assert self._meter is not None
            self._meter.ledger.close(calls)
            if calls.stop_reason is not None and status is not JobStatus.CANCELLED:
                # The provider could not be used: that is why the CLI failed, whatever it said.
                status, error = JobStatus.FAILED, calls.stop_reason
            summary = metered_summary(summary, calls.calls, self._settings.cli.prices)
        if error is not None and not summary.is_error:
            summary = summary.model_copy(update={"is_error": True, "error": error["message"]})
        job.summary = summary
        self._finish(
            job,
            status,
            error=error,
            duration_ms=int((time.monotonic() - started) * 1000),
            calls=calls.calls if calls is not None else None,
        )

    def _open_calls(self, job: Job, budget: JobBudget | None) -> JobCalls | None:
        """The job's calls on the meter: each is logged as it ends (``model_call``), and the
        meter may stop the job (its task is cancelled; `stop_reason` says why)."""
        if self._meter is None:
            return None

        def stop() -> None:
            if job.task is not None and not job.task.done():
                job.task.cancel()

        def logged(call: ModelCall) -> None:
            self._append(job, EventKind.MODEL_CALL, call.model_dump(mode="json"))

        return self._meter.ledger.open(
            job.id,
            on_call=logged,
            on_stop=stop,
            budget=(
                self._meter.guard(job.id, budget, self._settings.cli.prices)
                if budget is not None
                else None
            ),
        )

    async def _attempt(self, job: Job, run: _PreparedRun) -> str:
        """One CLI process from start to exit; returns its stderr tail. The process is always
        closed, whatever interrupts the run (timeout, cancel, a transport error)."""
        if self._server is not None:
            return await self._attempt_on_server(job, run)
        limits = self._settings.limits
        raw = RawOutput(self._ws.jobs_dir / f"{job.id}.stdout", limits.raw_output_bytes)
        process = CliProcess(
            sandbox.command(
                self._settings.sandbox,
                run.invocation.argv,
                workspace=self._ws.root,
                cwd=run.spec.cwd,
            ),
            env=self._child_env(run.invocation.env),
            cwd=run.spec.cwd,
            max_line_bytes=limits.max_line_bytes,
            stderr_tail_bytes=limits.stderr_tail_bytes,
            kill_grace_s=limits.kill_grace_s,
            on_line=raw.write,
        )
        job.exit_code = None
        try:
            await process.start()
            async for obj in process.objects():
                self._emit(job, run.parser.feed(obj))
            job.exit_code = await process.wait()
            self._emit(job, run.parser.finish(job.exit_code))
        finally:
            raw.close()
            code = await asyncio.shield(process.close())
            job.exit_code = job.exit_code if job.exit_code is not None else code
            if tail := process.stderr.text():
                self._append(job, EventKind.STDERR, {"tail": tail})
        return process.stderr.text()

    async def _attempt_on_server(self, job: Job, run: _PreparedRun) -> str:
        """One prompt on the CLI's server (`harness.opencode_server`): the same lines, parser and
        end as a process run; what a process would have written to stderr is returned."""
        assert self._server is not None
        adapter: Any = self._adapter  # OpencodeAdapter: the only CLI with a server
        raw = RawOutput(
            self._ws.jobs_dir / f"{job.id}.stdout", self._settings.limits.raw_output_bytes
        )

        def on_line(line: dict[str, Any]) -> None:
            raw.write(json.dumps(line, separators=(",", ":")).encode() + b"\n")
            self._emit(job, run.parser.feed(line))

        job.exit_code = None
        try:
            outcome = await self._server.run(
                self._server_invocation(run.spec),
                resume_id=run.spec.resume_id,
                new_session=adapter.new_session(),
                message=adapter.message(run.spec),
                on_line=on_line,
            )
        finally:
            raw.close()
        job.exit_code = outcome.exit_code
        self._emit(job, run.parser.finish(outcome.exit_code))
        if outcome.error_text:
            self._append(job, EventKind.STDERR, {"tail": outcome.error_text})
        return outcome.error_text

    def _server_invocation(self, spec: RunSpec) -> ServerInvocation:
        from harness.opencode_server import ServerInvocation  # only an opencode harness needs it

        adapter: Any = self._adapter
        serve = adapter.server_invocation(spec)
        return ServerInvocation(
            argv=serve.argv,
            env=self._child_env(serve.env),
            cwd=spec.cwd,
            watched=adapter.server_reads_at_start(spec),
        )

    def warm_up(self) -> None:
        """Start the CLI's server now, in the background, so that the first prompt does not
        wait for it (about 2 s for OpenCode): after a bootstrap, and at the start of a harness
        whose workspace is bootstrapped. A failure is only logged; the first prompt tries again
        and reports it."""
        if self._server is None or not self._ws.session_repo.is_dir():
            return
        if self._warming is not None and not self._warming.done():
            return
        self._warming = asyncio.create_task(self._warm_up(), name="warm-cli-server")

    async def _warm_up(self) -> None:
        assert self._server is not None
        try:
            await self.ready_cli()
            spec = self._spec(JobRequest(prompt="(warm-up)"), resume_id=None)
            self._adapter.write_config(spec)
            await self._server.ensure(self._server_invocation(spec))
        except Exception as exc:  # the first prompt meets it again, and says so
            logger.warning("cli server warm-up failed", extra={"error": str(exc)})

    def _resume_was_refused(self, run: _PreparedRun, exit_code: int | None, stderr: str) -> bool:
        return (
            run.spec.resume_id is not None
            and run.parser.summary.is_error
            and self._adapter.is_unknown_session(exit_code, stderr)
        )

    def _start_over(self, job: Job, request: JobRequest, refused: _PreparedRun) -> _PreparedRun:
        """The CLI has no record of the saved session (e.g. its first turn was cancelled before
        the CLI wrote anything): forget it and run the prompt in a new CLI session."""
        self._append(
            job,
            EventKind.ERROR,
            {
                "code": "resume_failed",
                "fatal": False,
                "message": (
                    f"the CLI has no record of session {refused.spec.resume_id}; "
                    "starting a new CLI session"
                ),
            },
        )
        self._update_state(cli_session_id=None, usage_checkpoint=None)
        return self._prepare(request, fresh=True)

    def _emit(self, job: Job, events: list[AgentEvent]) -> None:
        for event in events:
            self._append(job, event.kind, event.data)
            if event.kind == EventKind.SESSION_STARTED:
                session_id = event.data.get("cli_session_id")
                if session_id and self._ws.load_state().get("cli_session_id") != session_id:
                    # Saved at once: a first turn that dies later can still be resumed.
                    self._update_state(cli_session_id=session_id)

    def _finish(
        self,
        job: Job,
        status: JobStatus,
        *,
        error: dict[str, Any] | None,
        duration_ms: int | None = None,
        calls: list[ModelCall] | None = None,
    ) -> None:
        job.status = status
        job.error = error
        job.finished_at = time.time()
        self._append(
            job,
            JobEventKind.JOB_FINISHED,
            {
                "status": status.value,
                "summary": job.summary.model_dump() if job.summary else None,
                "error": error,
                "exit_code": job.exit_code,
                "duration_ms": duration_ms,
                **(
                    {"calls": [c.model_dump(mode="json") for c in calls]}
                    if calls is not None
                    else {}
                ),
            },
        )
        job.log.close()
        self._save_meta(job)
        logger.info(
            "job finished",
            extra={"job_id": job.id, "status": status.value, "duration_ms": duration_ms},
        )
        if self.observer is not None:
            try:
                self.observer.on_finished(job)
            except Exception:
                logger.exception("the job observer failed on a job's end", extra={"job_id": job.id})

    def _append(self, job: Job, kind: str, data: dict[str, Any]) -> JobEvent:
        """Append to the job's log, then tell the observer; the log is the record, so what the
        observer does can never fail the job."""
        entry = job.log.append(kind, data)
        if self.observer is not None:
            try:
                self.observer.on_log(job, entry)
            except Exception:
                logger.exception("the job observer failed on a log entry", extra={"job_id": job.id})
        return entry

    # -- publishing bookkeeping (`harness.publishing`) ------------------------------------------

    def mark_published(self, job: Job) -> None:
        """Record in the job's meta that its final event is in the outbox."""
        job.published = True
        self._save_meta(job)

    def unpublished_jobs(self, since: float, *, include_published: bool = False) -> list[Job]:
        """Finished jobs whose meta file, changed at or after `since` (epoch seconds), does not
        say ``published`` (with `include_published`, every finished one): oldest first. A meta
        file that cannot be read is skipped (logged)."""
        found: list[tuple[float, Job]] = []
        for meta_path in self._ws.jobs_dir.glob("*.json"):
            try:
                mtime = meta_path.stat().st_mtime
                if mtime < since:
                    continue
                meta = json.loads(meta_path.read_text(encoding="utf-8"))
                published = meta.get("published") is True and not include_published
                if published or meta.get("status") == JobStatus.RUNNING:
                    continue
                job = self._find(meta["job_id"])
            except (OSError, ValueError, KeyError, TypeError):
                logger.warning(
                    "skipped an unreadable job meta file", extra={"path": meta_path.name}
                )
                continue
            if job is not None and job.status.finished:
                found.append((mtime, job))
        return [job for _, job in sorted(found, key=lambda pair: (pair[0], pair[1].id))]

    # -- helpers -----------------------------------------------------------------------------

    def _spec(self, request: JobRequest, resume_id: str | None) -> RunSpec:
        cli = self._settings.cli
        return RunSpec(
            prompt=request.prompt,
            workspace=self._ws.root,
            cwd=self._ws.session_repo,
            home=self._ws.cli_home,
            instruction_file=self._ws.root / self._adapter.instruction_file_name,
            binary=self._cli.binary,  # CliNotInstalled (409) before the pinned one is there
            model=request.model or self._worker_model() or cli.model,
            resume_id=resume_id,
            system_prompt=cli.system_prompt,
            provider=self._meter.provider_for_cli() if self._meter else cli.provider,
        )

    def _worker_model(self) -> str | None:
        """The model the last bootstrap named: the worker's now, which may have changed since
        this harness was launched with VWM_MODEL."""
        record = self._ws.load_state().get("bootstrap") or {}
        model = record.get("model") if isinstance(record, dict) else None
        return model if isinstance(model, str) and model else None

    def _child_env(self, adapter_env: dict[str, str]) -> dict[str, str]:
        # The vendor keys are the meter's to use, never the CLI's.
        vendor_keys = self._meter is None and self._settings.cli.provider is None
        return cli_environment(adapter_env, vendor_keys=vendor_keys)

    def _update_state(self, **changes: Any) -> None:
        state = self._ws.load_state()
        state.update(changes)
        self._ws.save_state(state)

    def _save_meta(self, job: Job) -> None:
        meta = {
            "job_id": job.id,
            "prompt": job.prompt,
            **job.to_dict(),
            "published": job.published,
            "causation_id": job.causation_id,
            "trace_context": job.trace_context,
        }
        path = self._ws.jobs_dir / f"{job.id}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(meta), encoding="utf-8")
        os.replace(tmp, path)

    def _find(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id) or self._load(job_id)

    def _load(self, job_id: str) -> Job | None:
        if not _JOB_ID.fullmatch(job_id):
            return None
        meta_path = self._ws.jobs_dir / f"{job_id}.json"
        if not meta_path.exists():
            return None
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        job = Job(
            id=job_id,
            prompt=meta.get("prompt", ""),
            log=EventLog.load(job_id, self._ws.jobs_dir / f"{job_id}.jsonl"),
            status=JobStatus(meta["status"]),
            created_at=meta.get("created_at") or 0.0,
            finished_at=meta.get("finished_at"),
            summary=RunSummary(**meta["summary"]) if meta.get("summary") else None,
            error=meta.get("error"),
            exit_code=meta.get("exit_code"),
            published=meta.get("published") is True,
            causation_id=meta.get("causation_id"),
            trace_context=_trace_context(meta.get("trace_context")),
        )
        self._jobs[job_id] = job
        return job


def _cli_server(
    adapter: Adapter, settings: HarnessSettings, workspace: Workspace
) -> OpencodeServer | None:
    if not hasattr(adapter, "server_invocation"):
        return None
    from harness.opencode_server import OpencodeServer  # only an opencode harness loads it

    return OpencodeServer(
        sandboxed=lambda argv, cwd: sandbox.command(
            settings.sandbox, argv, workspace=workspace.root, cwd=cwd
        ),
        kill_grace_s=settings.limits.kill_grace_s,
        stderr_tail_bytes=settings.limits.stderr_tail_bytes,
    )


def _trace_context(value: Any) -> dict[str, str] | None:
    """A meta file's trace context, if it is one (an older meta file has none)."""
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        return None
    return value or None


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
