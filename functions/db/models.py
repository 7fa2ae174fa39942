"""The control plane's tables as SQLAlchemy 2 typed models, and the vocabularies of their status
and kind columns. Every enum column is backed by a CHECK constraint, so the database refuses what
the code would refuse. The schema itself changes only through `migrations/`.

Three PostgreSQL schemas: `shared` (things other platform services may read), `vwm` (this
service's own state) and `vw_telemetry` (append-only facts). On SQLite they are mapped away
(see `engine.SCHEMA_TRANSLATE_MAP`); table names are unique across schemas so that is safe.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BLANK_SCHEMA,
    BigInteger,
    Boolean,
    CheckConstraint,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from eventing.job_events import ACTIVE, FINISHED, JobStatus
from eventing.model_calls import CALL_OUTCOMES, MAX_CALL_ERROR_CHARS
from functions.db.columns import Json, UTCDateTime, new_id, utcnow

SCHEMAS = ("shared", "vwm", "vw_telemetry")

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Cli(StrEnum):
    CLAUDE = "claude"
    CODEX = "codex"
    GEMINI = "gemini"
    OPENCODE = "opencode"


class SessionStatus(StrEnum):
    PROVISIONING = "provisioning"
    READY = "ready"
    ENDING = "ending"
    ENDED = "ended"
    FAILED = "failed"


class JobKind(StrEnum):
    PROMPT = "prompt"
    LEARNING = "learning"


class JobMode(StrEnum):
    SYNC = "sync"
    STREAM = "stream"
    ASYNC = "async"


# Job statuses are defined once, in the shared contract (the harness reports them too);
# `JobStatus` and these names stay importable from here for the control plane's modules.
ACTIVE_JOB_STATUSES = ACTIVE
FINISHED_JOB_STATUSES = FINISHED


class ApiKeyScope(StrEnum):
    ADMIN = "admin"
    CLIENT = "client"


class LearningMode(StrEnum):
    DIRECT = "direct"  # the learning commit goes to the worker repo's branch
    REVIEW = "review"  # to `learning/<session id>`, for a person to merge


class LearningStatus(StrEnum):
    RECORDED = "recorded"  # a commit with new knowledge was made (and pushed, see `branch`)
    NOTHING = "nothing"  # the run found nothing worth recording
    FAILED = "failed"  # the run or its commit failed; the session ended anyway


class CostSource(StrEnum):
    REPORTED = "reported"
    ESTIMATED = "estimated"


class UsageSource(StrEnum):
    CLI = "cli"  # the CLI's own report
    METERED = "metered"  # the sum of the job's model calls, measured by the session's proxy


def one_of(column: str, values: Iterable[str]) -> str:
    """SQL for `column IN ('a', 'b')`, for CHECK constraints and partial index predicates."""
    return f"{column} IN ({', '.join(repr(str(value)) for value in sorted(values))})"


def non_negative(*columns: str) -> str:
    return " AND ".join(f"{column} >= 0" for column in columns)


WORKER_BUDGET_COLUMNS = (
    "budget_tokens_per_day",
    "budget_tokens_total",
    "budget_usd_per_day",
    "budget_usd_total",
)
SESSION_BUDGET_COLUMNS = ("budget_tokens", "budget_usd")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        datetime: UTCDateTime(),
        dict[str, Any]: Json,
        list[Any]: Json,
    }


class Runtime(Base):
    """A CLI, its version and image, its default model, and the prices used to estimate cost."""

    __tablename__ = "runtimes"
    __table_args__ = (CheckConstraint(one_of("cli", Cli), name="cli"), {"schema": "shared"})

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    cli: Mapped[str] = mapped_column(String(16))
    cli_version: Mapped[str] = mapped_column(String(64))
    image: Mapped[str | None] = mapped_column(Text)
    default_model: Mapped[str | None] = mapped_column(String(200))
    # {input, cache_read, cache_write, output}: USD per million tokens.
    prices: Mapped[dict[str, Any] | None]
    # The NAME of where the provider key lives (env variable, Secret), never the key itself.
    credential_ref: Mapped[str | None] = mapped_column(String(200))
    provider_base_url: Mapped[str | None] = mapped_column(Text)
    limits: Mapped[dict[str, Any]] = mapped_column(default=dict)  # {job_timeout_s}
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Skill(Base):
    """An uploaded skill package: the blob lives in storage, the row says where and what."""

    __tablename__ = "skills"
    __table_args__ = (
        UniqueConstraint("name", "version"),
        CheckConstraint(non_negative("size"), name="size_non_negative"),
        {"schema": "shared"},
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(100))
    version: Mapped[str] = mapped_column(String(64))
    blob_key: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    manifest: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Worker(Base):
    """A named agent: a runtime, a repository it works in, its instructions and timeouts.

    `revision` counts the changes of what a running session is given (instructions, model,
    skills, learning): a session whose harness has an older one is brought up to date before its
    next prompt, and each job records the revision it ran with."""

    __tablename__ = "workers"
    __table_args__ = (
        CheckConstraint(one_of("learning_mode", LearningMode), name="learning_mode"),
        *(CheckConstraint(f"{c} >= 0", name=f"{c}_non_negative") for c in WORKER_BUDGET_COLUMNS),
        {"schema": "vwm"},
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    runtime_id: Mapped[str] = mapped_column(ForeignKey("shared.runtimes.id"), index=True)
    repo_url: Mapped[str] = mapped_column(Text)
    repo_branch: Mapped[str] = mapped_column(String(200), default="main")
    instructions: Mapped[str] = mapped_column(Text, default="")
    auto_learning: Mapped[bool] = mapped_column(Boolean, default=False)
    learning_mode: Mapped[str] = mapped_column(
        String(16), default=LearningMode.DIRECT, server_default=LearningMode.DIRECT
    )
    model: Mapped[str | None] = mapped_column(String(200))
    timeouts: Mapped[dict[str, Any]] = mapped_column(default=dict)  # {job_s, idle_s}
    revision: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    # Budgets over every session of the worker (functions.budgets): billed tokens and USD per
    # UTC day and in total. NULL: no limit.
    budget_tokens_per_day: Mapped[int | None] = mapped_column(BigInteger)
    budget_tokens_total: Mapped[int | None] = mapped_column(BigInteger)
    budget_usd_per_day: Mapped[float | None] = mapped_column(Double)
    budget_usd_total: Mapped[float | None] = mapped_column(Double)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class WorkerSkill(Base):
    """A skill a worker uses, by name: pinned to `version`, or (NULL) following the highest
    version uploaded. By name, not by row: a pin may follow versions uploaded later."""

    __tablename__ = "worker_skills"
    __table_args__ = {"schema": "vwm"}

    worker_id: Mapped[str] = mapped_column(
        ForeignKey("vwm.workers.id", ondelete="CASCADE"), primary_key=True
    )
    skill_name: Mapped[str] = mapped_column(String(100), primary_key=True, index=True)
    version: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WorkerSession(Base):
    """One running copy of a worker, served by one harness.

    `runtime_state` is the runtime backend's handle on the harness: locally `{pid, port, ...}`;
    on Knative the Service and PVC names. Never a secret: the harness token is derived from the
    session id when needed (`functions.runtime.tokens`), provider keys are read from their
    `credential_ref`.
    """

    __tablename__ = "sessions"
    __table_args__ = (
        CheckConstraint(one_of("status", SessionStatus), name="status"),
        *(CheckConstraint(f"{c} >= 0", name=f"{c}_non_negative") for c in SESSION_BUDGET_COLUMNS),
        Index(None, "worker_id", "created_at"),
        Index(None, "created_at", "id"),
        # A unique index, not a constraint: SQLite adds one without rebuilding the table (0014).
        Index("uq_sessions_worker_id_idempotency_key", "worker_id", "idempotency_key", unique=True),
        {"schema": "vwm"},
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    worker_id: Mapped[str] = mapped_column(ForeignKey("vwm.workers.id"))
    # The caller's key for its create request: sent again, it answers this session (0014).
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default=SessionStatus.PROVISIONING, index=True)
    session_repo_url: Mapped[str | None] = mapped_column(Text)
    session_repo_branch: Mapped[str | None] = mapped_column(String(200))
    workspace: Mapped[str] = mapped_column(Text)  # a folder (local) or a PVC name (Knative)
    endpoint: Mapped[str | None] = mapped_column(Text)  # the harness base URL
    runtime_state: Mapped[dict[str, Any]] = mapped_column(default=dict)
    cli_session_id: Mapped[str | None] = mapped_column(String(200))
    error: Mapped[dict[str, Any] | None]
    # What ending the session did: the harness's shutdown outcome (per repository the commit,
    # how it was pushed, the branch holding the work). NULL until it ended.
    result: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    ready_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    last_activity_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The global instructions version its harness was last given (bootstrap); NULL: none yet.
    # On the row, not in a process: any replica sees whether the harness needs them again.
    instructions_version: Mapped[int | None] = mapped_column(Integer)
    # The worker revision and the digest of the skill set its harness was last given.
    worker_revision: Mapped[int | None] = mapped_column(Integer)
    skills_digest: Mapped[str | None] = mapped_column(String(64))
    # The session's own budget (functions.budgets): billed tokens and USD over its life. NULL:
    # no limit.
    budget_tokens: Mapped[int | None] = mapped_column(BigInteger)
    budget_usd: Mapped[float | None] = mapped_column(Double)


class Job(Base):
    """One prompt (or learning run) on a session. The harness runs one job at a time; jobs of
    prompt requests wait `queued` for their turn there, so a session may have several active
    rows (`start_job` refuses a sync or stream prompt on a busy session)."""

    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(one_of("kind", JobKind), name="kind"),
        CheckConstraint(one_of("mode", JobMode), name="mode"),
        CheckConstraint(one_of("status", JobStatus), name="status"),
        CheckConstraint("timeout_s > 0", name="timeout_positive"),
        UniqueConstraint("session_id", "idempotency_key"),
        Index(None, "session_id", "created_at"),
        Index(
            "ix_jobs_active_per_session",
            "session_id",
            postgresql_where=text(one_of("status", ACTIVE_JOB_STATUSES)),
            sqlite_where=text(one_of("status", ACTIVE_JOB_STATUSES)),
        ),
        {"schema": "vwm"},
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    session_id: Mapped[str] = mapped_column(ForeignKey("vwm.sessions.id"))
    kind: Mapped[str] = mapped_column(String(16), default=JobKind.PROMPT)
    prompt: Mapped[str] = mapped_column(Text)
    mode: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED)
    result: Mapped[dict[str, Any] | None]  # the harness's job summary
    error: Mapped[dict[str, Any] | None]
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    harness_job_id: Mapped[str | None] = mapped_column(String(64))
    timeout_s: Mapped[int | None] = mapped_column(Integer)
    # The global instructions version the harness had when the job was dispatched.
    instructions_version: Mapped[int | None] = mapped_column(Integer)
    worker_revision: Mapped[int | None] = mapped_column(Integer)  # the worker's, likewise
    # The `dev.vwm.prompt.requested` the job runs (its id), and where its end is also sent.
    causation_id: Mapped[str | None] = mapped_column(String(200))
    reply_to: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class ProcessedEvent(Base):
    """A CloudEvent the `events` function has handled, by its `source` + `id` (the CloudEvents
    identity): a redelivery of the same event is acknowledged and changes nothing."""

    __tablename__ = "processed_events"
    __table_args__ = {"schema": "vwm"}

    source: Mapped[str] = mapped_column(String(1024), primary_key=True)
    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    type: Mapped[str] = mapped_column(String(100))
    processed_at: Mapped[datetime] = mapped_column(default=utcnow)


class JobEventRecord(Base):
    """One normalized event of a job's log, keyed by (job, seq): stored from `dev.vwm.job.output`
    batches in whatever order they arrive, read back in seq order for replay. Unbounded, unlike
    the telemetry row's `event_log`."""

    __tablename__ = "job_events"
    __table_args__ = (CheckConstraint("seq >= 1", name="seq_positive"), {"schema": "vwm"})

    job_id: Mapped[str] = mapped_column(ForeignKey("vwm.jobs.id"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    data: Mapped[dict[str, Any]]
    ts: Mapped[float] = mapped_column(Double)


class SystemSetting(Base):
    """A hot setting (e.g. `global_instructions`); every write bumps `version`."""

    __tablename__ = "system_settings"
    __table_args__ = (CheckConstraint("version >= 1", name="version_positive"), {"schema": "vwm"})

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[Any] = mapped_column(Json)
    version: Mapped[int] = mapped_column(Integer, default=1)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class SystemSettingVersion(Base):
    """Every value a system setting was given, one row per `version`, written in the transaction
    that wrote the setting (`Settings.put`), so the history never misses or invents a write.
    Deleting the setting deletes its history: a key set again starts over at version 1."""

    __tablename__ = "system_setting_versions"
    __table_args__ = (CheckConstraint("version >= 1", name="version_positive"), {"schema": "vwm"})

    key: Mapped[str] = mapped_column(
        ForeignKey("vwm.system_settings.key", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    value: Mapped[Any] = mapped_column(Json)
    written_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    """An API key `vwm_<id>_<secret>`: only the SHA-256 of the secret is stored."""

    __tablename__ = "api_keys"
    __table_args__ = (
        CheckConstraint(one_of("scope", ApiKeyScope), name="scope"),
        {"schema": "vwm"},
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    scope: Mapped[str] = mapped_column(String(16))
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]


TOKEN_COLUMNS = (
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
)
DURATION_COLUMNS = ("queued_ms", "cli_start_ms", "first_output_ms", "total_ms")


class TelemetryRequest(Base):
    """What one finished job cost and how long it took. Session, worker and runtime ids are kept
    as plain values, not foreign keys: telemetry is a record of facts and outlives what it names."""

    __tablename__ = "requests"
    __table_args__ = (
        CheckConstraint(one_of("cli", Cli), name="cli"),
        CheckConstraint(one_of("status", FINISHED_JOB_STATUSES), name="status"),
        CheckConstraint(one_of("cost_source", CostSource), name="cost_source"),
        CheckConstraint("(cost_usd IS NULL) = (cost_source IS NULL)", name="cost_has_source"),
        CheckConstraint(non_negative(*TOKEN_COLUMNS), name="tokens_non_negative"),
        CheckConstraint(non_negative(*DURATION_COLUMNS), name="durations_non_negative"),
        CheckConstraint(non_negative("cost_usd", "instructions_version"), name="cost_non_negative"),
        CheckConstraint(one_of("usage_source", UsageSource), name="usage_source"),
        CheckConstraint("model_calls >= 0", name="model_calls_non_negative"),
        Index(None, "worker_id", "created_at"),
        Index(None, "session_id", "created_at"),
        Index(None, "created_at"),
        {"schema": "vw_telemetry"},
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    job_id: Mapped[str] = mapped_column(ForeignKey("vwm.jobs.id"), unique=True)
    session_id: Mapped[str] = mapped_column(String(32))
    worker_id: Mapped[str] = mapped_column(String(32))
    runtime_id: Mapped[str] = mapped_column(String(32))
    cli: Mapped[str] = mapped_column(String(16))
    model: Mapped[str | None] = mapped_column(String(200))
    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cache_read_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cache_write_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    reasoning_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cost_usd: Mapped[float | None] = mapped_column(Double)
    cost_source: Mapped[str | None] = mapped_column(String(16))
    queued_ms: Mapped[int | None] = mapped_column(Integer)
    cli_start_ms: Mapped[int | None] = mapped_column(Integer)
    first_output_ms: Mapped[int | None] = mapped_column(Integer)
    total_ms: Mapped[int | None] = mapped_column(Integer)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    instructions_version: Mapped[int] = mapped_column(Integer, default=0)  # 0: none set
    worker_revision: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    cli_version: Mapped[str | None] = mapped_column(String(64))  # as the CLI reported it
    raw_output: Mapped[str] = mapped_column(Text, default="")  # the CLI's stdout, bounded
    # The job's normalized event log (bounded): replayed once the session's harness is gone.
    event_log: Mapped[str] = mapped_column(Text, default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # "metered": the token counts are the sum of the job's model calls (`ModelCallRecord`) and
    # `cli_usage` is what the CLI reported itself; "cli": they are the CLI's report.
    usage_source: Mapped[str] = mapped_column(
        String(16), default=UsageSource.CLI, server_default=UsageSource.CLI
    )
    cli_usage: Mapped[dict[str, Any] | None]  # `Usage` fields
    usage_mismatch: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    model_calls: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # rows kept


class ModelCallRecord(Base):
    """One model call of a job, as the session's metering proxy measured it
    (`eventing.model_calls.ModelCall`), stored with the job's telemetry when it finishes.
    Session and worker ids are plain values, as in `TelemetryRequest`; (job_id, seq) is unique,
    and its index also serves lookups by job."""

    __tablename__ = "model_calls"
    __table_args__ = (
        CheckConstraint(one_of("outcome", CALL_OUTCOMES), name="outcome"),
        CheckConstraint("seq >= 1", name="seq_positive"),
        CheckConstraint(non_negative(*TOKEN_COLUMNS), name="tokens_non_negative"),
        CheckConstraint(non_negative("latency_ms", "ttft_ms"), name="durations_non_negative"),
        UniqueConstraint("job_id", "seq"),
        {"schema": "vw_telemetry"},
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    job_id: Mapped[str] = mapped_column(ForeignKey("vwm.jobs.id"))
    session_id: Mapped[str] = mapped_column(String(32))
    worker_id: Mapped[str] = mapped_column(String(32))
    seq: Mapped[int] = mapped_column(Integer)
    api: Mapped[str] = mapped_column(String(32))
    model: Mapped[str | None] = mapped_column(String(200))
    streamed: Mapped[bool] = mapped_column(Boolean)
    status: Mapped[int | None] = mapped_column(Integer)  # the provider's HTTP status
    outcome: Mapped[str] = mapped_column(String(16))
    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cache_read_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cache_write_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    reasoning_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    complete: Mapped[bool] = mapped_column(Boolean)
    started_at: Mapped[datetime]
    latency_ms: Mapped[float] = mapped_column(Double)
    ttft_ms: Mapped[float | None] = mapped_column(Double)
    error: Mapped[str | None] = mapped_column(String(MAX_CALL_ERROR_CHARS))


class BudgetCharge(Base):
    """What one model call of a job cost, as its session's meter charged it
    (`eventing.budgets.Charge`): the sums over these rows are what the budgets have used.
    Keyed by (job_id, seq), so a charge the meter sends again counts once; session and worker
    ids are plain values, as in the telemetry."""

    __tablename__ = "budget_charges"
    __table_args__ = (
        CheckConstraint(non_negative("seq", "tokens", "usd"), name="non_negative"),
        Index(None, "worker_id", "charged_at"),  # a worker's spending today, and in total
        Index(None, "session_id"),
        {"schema": "vwm"},
    )

    job_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[str] = mapped_column(String(32))
    worker_id: Mapped[str] = mapped_column(String(32))
    tokens: Mapped[int] = mapped_column(BigInteger)
    usd: Mapped[float] = mapped_column(Double)
    charged_at: Mapped[datetime] = mapped_column(default=utcnow)


class Learning(Base):
    """What an auto-learning run taught the worker's repository: one row per run, whatever its
    outcome (`status`), written by the session's end."""

    __tablename__ = "learnings"
    __table_args__ = (
        CheckConstraint(non_negative("input_tokens", "output_tokens"), name="tokens_non_negative"),
        CheckConstraint(one_of("status", LearningStatus), name="status"),
        CheckConstraint(one_of("mode", LearningMode), name="mode"),
        Index(None, "worker_id", "created_at"),
        Index(None, "session_id"),
        {"schema": "vw_telemetry"},
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    session_id: Mapped[str] = mapped_column(String(32))
    worker_id: Mapped[str] = mapped_column(String(32))
    job_id: Mapped[str | None] = mapped_column(ForeignKey("vwm.jobs.id"), unique=True)
    summary: Mapped[str] = mapped_column(Text)
    files_changed: Mapped[list[Any]] = mapped_column(default=list)
    commit_sha: Mapped[str | None] = mapped_column(String(64))
    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    status: Mapped[str] = mapped_column(
        String(16), default=LearningStatus.RECORDED, server_default=LearningStatus.RECORDED
    )
    mode: Mapped[str] = mapped_column(
        String(16), default=LearningMode.DIRECT, server_default=LearningMode.DIRECT
    )
    branch: Mapped[str | None] = mapped_column(String(255))  # where the commit was pushed
    error: Mapped[dict[str, Any] | None]
    prompt_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    cache_read_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    cache_write_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    cost_usd: Mapped[float | None] = mapped_column(Double)


def schemaless_metadata() -> MetaData:
    """A copy of the metadata with every schema removed: what the tables look like on SQLite."""
    copy = MetaData(naming_convention=NAMING_CONVENTION)
    for table in Base.metadata.sorted_tables:
        # schema=None removes the table's schema (the stubs only admit names); BLANK_SCHEMA
        # does the same for the tables its foreign keys point at.
        table.to_metadata(
            copy,
            schema=None,  # type: ignore[arg-type]
            referred_schema_fn=lambda *_: BLANK_SCHEMA,  # type: ignore[arg-type,return-value]
        )
    return copy


# -- the embedded broker's queue and the control plane's outbox (functions/broker) ----------------


class BrokerDeliveryState(StrEnum):
    PENDING = "pending"  # due at `next_attempt_at`, or leased to a delivery loop now
    DELIVERED = "delivered"  # the subscriber accepted it: kept for the retention, then pruned
    DEAD = "dead"  # retries used up or refused: kept, with the last answer (a dead letter)


class OutboxState(StrEnum):
    PENDING = "pending"
    DEAD = "dead"  # the sink refused it for good: kept with the answer


class BrokerEvent(Base):
    """One event the embedded broker accepted, in arrival order (`seq`). (`source`, `id`) is
    the CloudEvents identity: the same event posted again is acknowledged and not queued twice.
    `body` is the event in structured-mode JSON, exactly as `eventing.codec` writes it."""

    __tablename__ = "broker_events"
    __table_args__ = (UniqueConstraint("source", "id"), {"schema": "vwm"})

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(1024))
    id: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(100))
    body: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class BrokerDelivery(Base):
    """One (event, subscription) pair that matched at ingress, and how its delivery goes. A
    delivery loop claims a due row by setting `leased_until`; a loop that dies mid-delivery
    leaves the lease to expire, and the row is delivered again (at least once)."""

    __tablename__ = "broker_deliveries"
    __table_args__ = (
        CheckConstraint(one_of("state", BrokerDeliveryState), name="state"),
        CheckConstraint(non_negative("attempts"), name="attempts_non_negative"),
        UniqueConstraint("event_seq", "subscription"),
        Index(None, "state", "next_attempt_at"),
        {"schema": "vwm"},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_seq: Mapped[int] = mapped_column(ForeignKey("vwm.broker_events.seq"))
    subscription: Mapped[str] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(16), default=BrokerDeliveryState.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # started, counting this one
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    leased_until: Mapped[datetime | None]
    last_status: Mapped[int | None] = mapped_column(Integer)  # None: no HTTP answer
    last_answer: Mapped[str | None] = mapped_column(Text)  # bounded by the queue
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class OutboxEvent(Base):
    """An event of the control plane waiting to be published, written in the transaction of the
    state change it tells about (the transactional outbox); `seq` is the order. A sent row is
    deleted; a refused one stays `dead` with the sink's answer."""

    __tablename__ = "outbox"
    __table_args__ = (
        CheckConstraint(one_of("state", OutboxState), name="state"),
        Index(None, "state", "seq"),
        {"schema": "vwm"},
    )

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(1024))
    id: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(100))
    body: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), default=OutboxState.PENDING)
    status: Mapped[int | None] = mapped_column(Integer)
    answer: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    dead_at: Mapped[datetime | None]


# -- user subscriptions (migration 0008) -------------------------------------------------------


class UserSubscription(Base):
    """A subscription a client made with ``POST /v1/subscriptions``: Knative ``filters``, an
    http(s) `sink`, an optional Knative ``delivery`` spec (None: the broker's default for user
    subscriptions). Both are stored as given and parsed again when the broker loads the row."""

    __tablename__ = "subscriptions"
    __table_args__ = (UniqueConstraint("name"), {"schema": "vwm"})

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(63))
    filters: Mapped[list[Any]] = mapped_column(Json)
    sink: Mapped[str] = mapped_column(String(2048))
    delivery: Mapped[dict[str, Any] | None] = mapped_column(Json)
    created_by: Mapped[str] = mapped_column(String(16))  # the creating key's scope
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
