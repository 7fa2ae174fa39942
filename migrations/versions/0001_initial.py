"""The initial schema: shared (runtimes, skills), vwm (workers, worker_skills, sessions, jobs,
system_settings, api_keys), vw_telemetry (requests, learnings).

Written by hand, frozen: it must not import the models, which will move on.

Revision ID: 0001
Revises:
Create Date: 2025-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
ACTIVE_JOB = "status IN ('queued', 'running')"


def _in(schema: str) -> str | None:
    """SQLite has no schemas, and its DDL drops foreign keys between tables in different schemas,
    so there every table goes unqualified."""
    return None if op.get_context().dialect.name == "sqlite" else schema


def _in_ref(schema: str, column: str) -> str:
    qualifier = _in(schema)
    return f"{qualifier}.{column}" if qualifier else column


def _id(name: str = "id") -> sa.Column:
    return sa.Column(name, sa.String(32), nullable=False)


def _when(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _tokens(*names: str) -> list[sa.Column]:
    return [sa.Column(name, sa.BigInteger(), nullable=False) for name in names]


def upgrade() -> None:
    op.create_table(
        "runtimes",
        _id(),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("cli", sa.String(16), nullable=False),
        sa.Column("cli_version", sa.String(64), nullable=False),
        sa.Column("image", sa.Text(), nullable=True),
        sa.Column("default_model", sa.String(200), nullable=True),
        sa.Column("prices", JSON, nullable=True),
        sa.Column("credential_ref", sa.String(200), nullable=True),
        sa.Column("provider_base_url", sa.Text(), nullable=True),
        sa.Column("limits", JSON, nullable=False),
        _when("created_at"),
        _when("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_runtimes"),
        sa.UniqueConstraint("name", name="uq_runtimes_name"),
        sa.CheckConstraint(
            "cli IN ('claude', 'codex', 'gemini', 'opencode')", name=op.f("ck_runtimes_cli")
        ),
        schema=_in("shared"),
    )
    op.create_table(
        "skills",
        _id(),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("blob_key", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("manifest", JSON, nullable=False),
        _when("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_skills"),
        sa.UniqueConstraint("name", "version", name="uq_skills_name_version"),
        sa.CheckConstraint("size >= 0", name=op.f("ck_skills_size_non_negative")),
        schema=_in("shared"),
    )
    op.create_table(
        "workers",
        _id(),
        sa.Column("name", sa.String(100), nullable=False),
        _id("runtime_id"),
        sa.Column("repo_url", sa.Text(), nullable=False),
        sa.Column("repo_branch", sa.String(200), nullable=False),
        sa.Column("instructions", sa.Text(), nullable=False),
        sa.Column("auto_learning", sa.Boolean(), nullable=False),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("timeouts", JSON, nullable=False),
        _when("created_at"),
        _when("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_workers"),
        sa.UniqueConstraint("name", name="uq_workers_name"),
        sa.ForeignKeyConstraint(
            ["runtime_id"],
            [_in_ref("shared", "runtimes.id")],
            name="fk_workers_runtime_id_runtimes",
        ),
        schema=_in("vwm"),
    )
    op.create_index("ix_workers_runtime_id", "workers", ["runtime_id"], schema=_in("vwm"))
    op.create_table(
        "worker_skills",
        _id("worker_id"),
        _id("skill_id"),
        sa.PrimaryKeyConstraint("worker_id", "skill_id", name="pk_worker_skills"),
        sa.ForeignKeyConstraint(
            ["worker_id"],
            [_in_ref("vwm", "workers.id")],
            name="fk_worker_skills_worker_id_workers",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["skill_id"], [_in_ref("shared", "skills.id")], name="fk_worker_skills_skill_id_skills"
        ),
        schema=_in("vwm"),
    )
    op.create_index("ix_worker_skills_skill_id", "worker_skills", ["skill_id"], schema=_in("vwm"))
    op.create_table(
        "sessions",
        _id(),
        _id("worker_id"),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("session_repo_url", sa.Text(), nullable=True),
        sa.Column("session_repo_branch", sa.String(200), nullable=True),
        sa.Column("workspace", sa.Text(), nullable=False),
        sa.Column("endpoint", sa.Text(), nullable=True),
        sa.Column("runtime_state", JSON, nullable=False),
        sa.Column("cli_session_id", sa.String(200), nullable=True),
        sa.Column("error", JSON, nullable=True),
        _when("created_at"),
        _when("ready_at", nullable=True),
        _when("ended_at", nullable=True),
        _when("last_activity_at"),
        sa.PrimaryKeyConstraint("id", name="pk_sessions"),
        sa.ForeignKeyConstraint(
            ["worker_id"], [_in_ref("vwm", "workers.id")], name="fk_sessions_worker_id_workers"
        ),
        sa.CheckConstraint(
            "status IN ('ended', 'ending', 'failed', 'provisioning', 'ready')",
            name=op.f("ck_sessions_status"),
        ),
        schema=_in("vwm"),
    )
    op.create_index("ix_sessions_status", "sessions", ["status"], schema=_in("vwm"))
    op.create_index(
        "ix_sessions_created_at_id", "sessions", ["created_at", "id"], schema=_in("vwm")
    )
    op.create_index(
        "ix_sessions_worker_id_created_at",
        "sessions",
        ["worker_id", "created_at"],
        schema=_in("vwm"),
    )
    op.create_table(
        "jobs",
        _id(),
        _id("session_id"),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("result", JSON, nullable=True),
        sa.Column("error", JSON, nullable=True),
        sa.Column("idempotency_key", sa.String(200), nullable=True),
        sa.Column("harness_job_id", sa.String(64), nullable=True),
        sa.Column("timeout_s", sa.Integer(), nullable=True),
        _when("created_at"),
        _when("started_at", nullable=True),
        _when("finished_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
        sa.ForeignKeyConstraint(
            ["session_id"], [_in_ref("vwm", "sessions.id")], name="fk_jobs_session_id_sessions"
        ),
        sa.UniqueConstraint(
            "session_id", "idempotency_key", name="uq_jobs_session_id_idempotency_key"
        ),
        sa.CheckConstraint("kind IN ('learning', 'prompt')", name=op.f("ck_jobs_kind")),
        sa.CheckConstraint("mode IN ('async', 'stream', 'sync')", name=op.f("ck_jobs_mode")),
        sa.CheckConstraint(
            "status IN ('cancelled', 'failed', 'queued', 'running', 'succeeded', 'timeout')",
            name=op.f("ck_jobs_status"),
        ),
        sa.CheckConstraint("timeout_s > 0", name=op.f("ck_jobs_timeout_positive")),
        schema=_in("vwm"),
    )
    op.create_index(
        "ix_jobs_session_id_created_at", "jobs", ["session_id", "created_at"], schema=_in("vwm")
    )
    # The database's half of "a session takes one job at a time".
    op.create_index(
        "uq_jobs_one_active_per_session",
        "jobs",
        ["session_id"],
        unique=True,
        schema=_in("vwm"),
        postgresql_where=sa.text(ACTIVE_JOB),
        sqlite_where=sa.text(ACTIVE_JOB),
    )
    op.create_table(
        "system_settings",
        sa.Column("key", sa.String(100), nullable=False),
        sa.Column("value", JSON, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        _when("updated_at"),
        sa.PrimaryKeyConstraint("key", name="pk_system_settings"),
        sa.CheckConstraint("version >= 1", name=op.f("ck_system_settings_version_positive")),
        schema=_in("vwm"),
    )
    op.create_table(
        "api_keys",
        _id(),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        _when("created_at"),
        _when("revoked_at", nullable=True),
        _when("last_used_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.CheckConstraint("scope IN ('admin', 'client')", name=op.f("ck_api_keys_scope")),
        schema=_in("vwm"),
    )
    _create_telemetry()


def _create_telemetry() -> None:
    tokens = (
        "input_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
        "output_tokens",
        "reasoning_tokens",
    )
    durations = ("queued_ms", "cli_start_ms", "first_output_ms", "total_ms")
    op.create_table(
        "requests",
        _id(),
        _id("job_id"),
        _id("session_id"),
        _id("worker_id"),
        _id("runtime_id"),
        sa.Column("cli", sa.String(16), nullable=False),
        sa.Column("model", sa.String(200), nullable=True),
        *_tokens(*tokens),
        sa.Column("cost_usd", sa.Double(), nullable=True),
        sa.Column("cost_source", sa.String(16), nullable=True),
        *(sa.Column(name, sa.Integer(), nullable=True) for name in durations),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("instructions_version", sa.Integer(), nullable=False),
        sa.Column("raw_output", sa.Text(), nullable=False),
        _when("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_requests"),
        sa.ForeignKeyConstraint(
            ["job_id"], [_in_ref("vwm", "jobs.id")], name="fk_requests_job_id_jobs"
        ),
        sa.UniqueConstraint("job_id", name="uq_requests_job_id"),
        sa.CheckConstraint(
            "cli IN ('claude', 'codex', 'gemini', 'opencode')", name=op.f("ck_requests_cli")
        ),
        sa.CheckConstraint(
            "status IN ('cancelled', 'failed', 'succeeded', 'timeout')",
            name=op.f("ck_requests_status"),
        ),
        sa.CheckConstraint(
            "cost_source IN ('estimated', 'reported')", name=op.f("ck_requests_cost_source")
        ),
        sa.CheckConstraint(
            "(cost_usd IS NULL) = (cost_source IS NULL)", name=op.f("ck_requests_cost_has_source")
        ),
        sa.CheckConstraint(
            " AND ".join(f"{name} >= 0" for name in tokens),
            name=op.f("ck_requests_tokens_non_negative"),
        ),
        sa.CheckConstraint(
            " AND ".join(f"{name} >= 0" for name in durations),
            name=op.f("ck_requests_durations_non_negative"),
        ),
        sa.CheckConstraint(
            "cost_usd >= 0 AND instructions_version >= 0",
            name=op.f("ck_requests_cost_non_negative"),
        ),
        schema=_in("vw_telemetry"),
    )
    op.create_index(
        "ix_requests_worker_id_created_at",
        "requests",
        ["worker_id", "created_at"],
        schema=_in("vw_telemetry"),
    )
    op.create_index(
        "ix_requests_session_id_created_at",
        "requests",
        ["session_id", "created_at"],
        schema=_in("vw_telemetry"),
    )
    op.create_index(
        "ix_requests_created_at", "requests", ["created_at"], schema=_in("vw_telemetry")
    )
    op.create_table(
        "learnings",
        _id(),
        _id("session_id"),
        _id("worker_id"),
        sa.Column("job_id", sa.String(32), nullable=True),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("files_changed", JSON, nullable=False),
        sa.Column("commit_sha", sa.String(64), nullable=True),
        *_tokens("input_tokens", "output_tokens"),
        _when("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_learnings"),
        sa.ForeignKeyConstraint(
            ["job_id"], [_in_ref("vwm", "jobs.id")], name="fk_learnings_job_id_jobs"
        ),
        sa.UniqueConstraint("job_id", name="uq_learnings_job_id"),
        sa.CheckConstraint(
            "input_tokens >= 0 AND output_tokens >= 0",
            name=op.f("ck_learnings_tokens_non_negative"),
        ),
        schema=_in("vw_telemetry"),
    )
    op.create_index(
        "ix_learnings_worker_id_created_at",
        "learnings",
        ["worker_id", "created_at"],
        schema=_in("vw_telemetry"),
    )
    op.create_index(
        "ix_learnings_session_id", "learnings", ["session_id"], schema=_in("vw_telemetry")
    )


def downgrade() -> None:
    op.drop_table("learnings", schema=_in("vw_telemetry"))
    op.drop_table("requests", schema=_in("vw_telemetry"))
    for table in ("api_keys", "system_settings", "jobs", "sessions", "worker_skills", "workers"):
        op.drop_table(table, schema=_in("vwm"))
    op.drop_table("skills", schema=_in("shared"))
    op.drop_table("runtimes", schema=_in("shared"))
