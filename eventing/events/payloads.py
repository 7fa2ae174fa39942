"""The `data` of every VWM CloudEvent: one strict pydantic model per event type.

Publishers build these (the harness for job events, the control plane for the rest); receivers get
them from `eventing.events.decode_event` or `eventing.codec`, never as dicts. Every model refuses
unknown fields and coercions (``"1"`` is not an int), so a publisher that drifts from the contract
is told at once instead of writing half a row. Times are aware UTC datetimes (RFC 3339 on the
wire), durations whole milliseconds, token counts whole tokens, costs US dollars.

The catalogue with who publishes and who consumes each type is `docs/events.md`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, ConfigDict, Field, model_validator

from eventing.agent_events import AgentEvent, CostSource, EventKind, RunSummary, Usage
from eventing.job_events import JobEvent, JobStatus
from eventing.lazy_models import LazyModel
from eventing.model_calls import MAX_CALLS_PER_JOB

# Ids travel in URLs, file names and Trigger filters: the harness's job id alphabet for all of them.
ID_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
MAX_PROMPT_CHARS = 512_000  # the harness's own limit on a prompt
MAX_BATCH_EVENTS = 1000


class Payload(LazyModel):
    """The base of every event's data: strict, closed, immutable."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class ErrorInfo(Payload):
    """Why something failed: the same `{code, message, details}` the HTTP error bodies carry."""

    code: str = Field(min_length=1, max_length=100, description="stable error code")
    message: str = Field(max_length=8192, description="what happened and what to do next")
    details: dict[str, Any] = Field(default_factory=dict, description="data about the failure")


# -- prompts and jobs --------------------------------------------------------------------------


class PromptRequested(Payload):
    """Run a prompt on a session, exactly once per event `source` + `id`.

    Sent by any service (or by `POST /v1/prompts` in async mode). The event's `sessionid`
    extension routes it to the session's harness; `session_id` here is the same id for senders
    that only write data (`decode_event` fills the extension from it). The job's events carry
    the requesting event's id as `causationid`."""

    session_id: str | None = Field(
        default=None, pattern=ID_PATTERN, description="the session; equals the sessionid extension"
    )
    prompt: str = Field(
        min_length=1, max_length=MAX_PROMPT_CHARS, description="the prompt, up to 512,000 chars"
    )
    timeout_s: float | None = Field(
        default=None, gt=0, le=86_400, description="the job's bound in seconds; None: the harness's"
    )
    reply_to: str | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        pattern=r"^[hH][tT][tT][pP][sS]?://",
        description="an http(s) URL that gets the job's job.completed or job.failed event",
    )
    model: str | None = Field(default=None, max_length=200, description="None: the worker's")
    new_session: bool = Field(default=False, description="start a fresh CLI session, no resume")
    not_after: AwareDatetime | None = Field(
        default=None, description="do not start the job after this instant (its sender gave up)"
    )
    requested_at: AwareDatetime | None = Field(
        default=None, description="when the prompt was asked for"
    )


class JobStarted(Payload):
    """The harness started the CLI for a job (the ``job_started`` entry of its job log)."""

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS, description="as run")
    cli: str = Field(min_length=1, max_length=16, description="claude, codex, gemini, opencode")
    model: str | None = Field(default=None, max_length=200, description="None: the CLI's default")
    resume_id: str | None = Field(default=None, max_length=200, description="CLI session resumed")
    started_at: AwareDatetime = Field(description="when the harness started the job")
    cli_version: str | None = Field(
        default=None,
        max_length=64,
        description="the CLI's version as it reported it; None: unknown",
    )


class OutputEvent(AgentEvent):
    """One normalized agent event as the job log numbered it."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    seq: int = Field(ge=1, description="its place in the job's log, no gaps")
    ts: float = Field(ge=0, description="when the harness logged it, epoch seconds")

    @classmethod
    def from_log(cls, entry: JobEvent) -> OutputEvent:
        """The batch form of one entry of a harness's job log (an agent event, not lifecycle)."""
        return cls(kind=EventKind(entry.kind), data=entry.data, seq=entry.seq, ts=entry.ts)


class JobOutput(Payload):
    """A batch of a job's normalized events, consecutive in its log: ``first_seq..last_seq``.

    Batches may arrive twice or out of order: a consumer keys each event on (job id, ``seq``)."""

    first_seq: int = Field(ge=1, description="seq of the first event in the batch")
    last_seq: int = Field(ge=1, description="seq of the last one; also the `seq` extension")
    events: list[OutputEvent] = Field(
        min_length=1, max_length=MAX_BATCH_EVENTS, description="1 to 1000, in seq order"
    )

    @model_validator(mode="after")
    def _consecutive(self) -> JobOutput:
        seqs = [event.seq for event in self.events]
        expected = list(range(self.first_seq, self.last_seq + 1))
        if seqs != expected:
            raise ValueError(
                f"events must be numbered first_seq..last_seq ({self.first_seq}..{self.last_seq}) "
                "with no gap, in order"
            )
        return self


class TokenUsage(Usage):
    """`Usage` (whole tokens), closed and strict for the wire."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class JobSummary(RunSummary):
    """`RunSummary` (what the CLI run came to), closed and strict for the wire."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    usage: TokenUsage = Field(default_factory=TokenUsage)
    cost_usd: float | None = Field(default=None, ge=0, description="US dollars")
    model: str | None = Field(
        default=None, max_length=200, description="the model the CLI reported; None: it named none"
    )
    cli_usage: TokenUsage | None = Field(
        default=None, description="the CLI's own report when `usage` is metered; None: not kept"
    )


class JobTimings(Payload):
    """How long the job took, in milliseconds, measured on the harness."""

    cli_start_ms: int | None = Field(default=None, ge=0, description="to the CLI's first event")
    first_output_ms: int | None = Field(
        default=None, ge=0, description="to the first text or tool call"
    )
    total_ms: int = Field(ge=0, description="the whole job")


class JobFinished(Payload):
    """What the control plane needs to record a finished job (row and telemetry) from events alone."""

    status: JobStatus = Field(description="the job's final status")
    summary: JobSummary = Field(description="final text, usage, cost, CLI session id")
    error: ErrorInfo | None = Field(default=None, description="why it failed")
    exit_code: int | None = Field(default=None, description="the CLI's; None if it never ran")
    started_at: AwareDatetime = Field(description="when the harness started the job")
    finished_at: AwareDatetime = Field(description="when it finished")
    timings: JobTimings = Field(description="durations in ms, for telemetry")
    raw_output: str = Field(default="", max_length=262_144, description="CLI stdout, bounded")
    # Plain objects, not `ModelCall`s: the receiver checks each call on its own and skips one
    # that does not validate, so a bad call never costs the job its record. None, not []: the
    # log's `job_finished` had no `calls` (no meter), and the stored log must say the same.
    calls: Annotated[list[dict[str, Any]], Field(max_length=MAX_CALLS_PER_JOB)] | None = Field(
        default=None,
        description="the job's model calls in order (`eventing.model_calls.ModelCall`); "
        "None: the session has no meter",
    )


class JobCompleted(JobFinished):
    """The job succeeded."""

    status: Literal[JobStatus.SUCCEEDED] = Field(
        default=JobStatus.SUCCEEDED, description="always succeeded"
    )


class JobFailed(JobFinished):
    """The job ended without success: the CLI failed, it timed out, was cancelled, or was lost."""

    status: Literal[JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.TIMEOUT] = Field(
        description="how it ended"
    )
    error: ErrorInfo = Field(description="why: `code` is stable (cli_failed, timeout, ...)")


# -- sessions ----------------------------------------------------------------------------------


class SessionCreated(Payload):
    """A session row exists and its harness is being provisioned."""

    worker_id: str = Field(pattern=ID_PATTERN, description="the worker the session runs")
    workspace: str = Field(min_length=1, max_length=4096, description="a folder or a PVC name")
    session_repo_url: str | None = Field(default=None, max_length=4096, description="masked")
    session_repo_branch: str | None = Field(default=None, max_length=200, description="its branch")
    created_at: AwareDatetime = Field(description="when the session row was created")


class SessionReady(Payload):
    """The session's harness bootstrapped and takes prompts."""

    worker_id: str = Field(pattern=ID_PATTERN, description="the worker the session runs")
    endpoint: str = Field(min_length=1, max_length=4096, description="the harness base URL")
    cli_session_id: str | None = Field(
        default=None, max_length=200, description="a CLI session resumed from an earlier run"
    )
    ready_at: AwareDatetime = Field(description="when the harness answered ready")


class EndReason(StrEnum):
    REQUESTED = "requested"  # a client or another service asked (DELETE, or this event)
    IDLE = "idle"  # no activity for the worker's idle_s
    MAX_AGE = "max_age"  # older than the maximum session age
    FAILED = "failed"  # the harness is gone or bootstrap failed


class SessionEndRequested(Payload):
    """End a session through the same path as ``DELETE``: learning (if on), save, teardown."""

    reason: EndReason = Field(default=EndReason.REQUESTED, description="why it ends")
    learn: bool = Field(default=True, description="run auto-learning first if the worker has it")
    requested_at: AwareDatetime = Field(description="when the end was asked for")


class SessionEnded(Payload):
    """The session is over: its harness stopped and its work left the volume (or could not)."""

    status: Literal["ended", "failed"] = Field(description="the session row's final status")
    reason: EndReason = Field(description="why it ended")
    result: dict[str, Any] | None = Field(
        default=None, description="the harness's shutdown outcome per repository"
    )
    error: ErrorInfo | None = Field(default=None, description="why it failed, if it did")
    ended_at: AwareDatetime = Field(description="when the harness was gone")


# -- learning and the clock --------------------------------------------------------------------


class LearningCompleted(Payload):
    """An auto-learning run finished: its lessons were committed to the worker's repository
    (`status` ``recorded``), or it found nothing to record, or it failed (the session ended
    anyway)."""

    worker_id: str = Field(pattern=ID_PATTERN, description="the worker that learned")
    status: Literal["recorded", "nothing", "failed"] = Field(
        default="recorded", description="what the run came to"
    )
    mode: Literal["direct", "review"] = Field(
        default="direct",
        description="direct: pushed to the worker repo's branch; review: to learning/<session>",
    )
    summary: str = Field(max_length=65_536, description="what was learned, in words")
    branch: str | None = Field(
        default=None, max_length=255, description="the branch the commit was pushed to"
    )
    error: ErrorInfo | None = Field(default=None, description="why it failed, if it did")
    files_changed: list[str] = Field(
        default_factory=list, max_length=10_000, description="paths in the worker's repository"
    )
    commit_sha: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{7,64}$", description="the commit with the lessons"
    )
    usage: TokenUsage = Field(default_factory=TokenUsage, description="the learning run's")
    cost_usd: float | None = Field(default=None, ge=0, description="US dollars")
    cost_source: CostSource | None = Field(default=None, description="reported or estimated")
    completed_at: AwareDatetime = Field(description="when the learning run finished")


class Tick(Payload):
    """A periodic nudge to reconcile (a PingSource in production, a timer in ``vwm up``)."""

    schedule: str | None = Field(default=None, max_length=200, description="the cron schedule")


__all__ = [
    "ID_PATTERN",
    "EndReason",
    "ErrorInfo",
    "JobCompleted",
    "JobFailed",
    "JobFinished",
    "JobOutput",
    "JobStarted",
    "JobSummary",
    "JobTimings",
    "LearningCompleted",
    "OutputEvent",
    "Payload",
    "PromptRequested",
    "SessionCreated",
    "SessionEndRequested",
    "SessionEnded",
    "SessionReady",
    "Tick",
    "TokenUsage",
]
