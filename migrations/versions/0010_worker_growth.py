"""Workers that grow: skills pinned by name, worker revisions, auto-learning records.

- `vwm.worker_skills` names a skill by `skill_name` and an optional `version` (NULL: follow the
  highest version uploaded). It was keyed by a skill row and never written, so it is rebuilt.
- `vwm.workers.revision` counts changes of what a running session is given (instructions, model,
  skills, learning); `learning_mode` is where auto-learning pushes: ``direct`` to the worker
  repo's branch, ``review`` to ``learning/<session id>``.
- `vwm.sessions.worker_revision` and `skills_digest` say what the session's harness was last
  given, so any replica knows when to bring it up to date (as `instructions_version` does).
- `vwm.jobs.worker_revision` and `vw_telemetry.requests.worker_revision` record the revision a
  job ran with; `requests.cli_version` the version the CLI reported.
- `vw_telemetry.learnings` gains the outcome of a learning run: `status`, `mode`, `branch`,
  `error`, the cache tokens and the learning prompt's version.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def _in(schema: str) -> str | None:
    """SQLite has no schemas: there every table goes unqualified (as in 0001)."""
    return None if op.get_context().dialect.name == "sqlite" else schema


def _in_ref(schema: str, column: str) -> str:
    qualifier = _in(schema)
    return f"{qualifier}.{column}" if qualifier else column


def _worker_fk() -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["worker_id"],
        [_in_ref("vwm", "workers.id")],
        name="fk_worker_skills_worker_id_workers",
        ondelete="CASCADE",
    )


def _checked(name: str, check: str, column_name: str, default: str) -> sa.Column:
    """A 16-character word column whose values are checked, added with its CHECK inline (an
    ALTER TABLE ADD COLUMN both dialects take)."""
    return sa.Column(
        column_name,
        sa.String(16),
        sa.CheckConstraint(check, name=op.f(name)),
        nullable=False,
        server_default=default,
    )


def _learning_columns() -> tuple[sa.Column, ...]:
    return (
        _checked(
            "ck_learnings_status",
            "status IN ('failed', 'nothing', 'recorded')",
            "status",
            "recorded",
        ),
        _checked("ck_learnings_mode", "mode IN ('direct', 'review')", "mode", "direct"),
        sa.Column("branch", sa.String(255), nullable=True),
        sa.Column("error", JSON, nullable=True),
        sa.Column("prompt_version", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("cache_read_tokens", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("cache_write_tokens", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("cost_usd", sa.Double(), nullable=True),
    )


def upgrade() -> None:
    vwm, telemetry = _in("vwm"), _in("vw_telemetry")
    op.drop_index("ix_worker_skills_skill_id", table_name="worker_skills", schema=vwm)
    op.drop_table("worker_skills", schema=vwm)
    op.create_table(
        "worker_skills",
        sa.Column("worker_id", sa.String(32), nullable=False),
        sa.Column("skill_name", sa.String(100), nullable=False),
        sa.Column("version", sa.String(64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("worker_id", "skill_name", name="pk_worker_skills"),
        _worker_fk(),
        schema=vwm,
    )
    op.create_index("ix_worker_skills_skill_name", "worker_skills", ["skill_name"], schema=vwm)
    # Plain ADD COLUMNs, also on SQLite: a batch copy would drop tables others point at.
    op.add_column(
        "workers",
        sa.Column("revision", sa.Integer(), nullable=False, server_default="1"),
        schema=vwm,
    )
    op.add_column(
        "workers",
        _checked(
            "ck_workers_learning_mode",
            "learning_mode IN ('direct', 'review')",
            "learning_mode",
            "direct",
        ),
        schema=vwm,
    )
    op.add_column("sessions", sa.Column("worker_revision", sa.Integer()), schema=vwm)
    op.add_column("sessions", sa.Column("skills_digest", sa.String(64)), schema=vwm)
    op.add_column("jobs", sa.Column("worker_revision", sa.Integer()), schema=vwm)
    op.add_column(
        "requests",
        sa.Column("worker_revision", sa.Integer(), nullable=False, server_default="0"),
        schema=telemetry,
    )
    op.add_column("requests", sa.Column("cli_version", sa.String(64)), schema=telemetry)
    for column in _learning_columns():
        op.add_column("learnings", column, schema=telemetry)


def downgrade() -> None:
    vwm, telemetry = _in("vwm"), _in("vw_telemetry")
    for column in reversed(_learning_columns()):
        op.drop_column("learnings", column.name, schema=telemetry)
    op.drop_column("requests", "cli_version", schema=telemetry)
    op.drop_column("requests", "worker_revision", schema=telemetry)
    op.drop_column("jobs", "worker_revision", schema=vwm)
    op.drop_column("sessions", "skills_digest", schema=vwm)
    op.drop_column("sessions", "worker_revision", schema=vwm)
    op.drop_column("workers", "learning_mode", schema=vwm)
    op.drop_column("workers", "revision", schema=vwm)
    op.drop_index("ix_worker_skills_skill_name", table_name="worker_skills", schema=vwm)
    op.drop_table("worker_skills", schema=vwm)
    op.create_table(
        "worker_skills",
        sa.Column("worker_id", sa.String(32), nullable=False),
        sa.Column("skill_id", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("worker_id", "skill_id", name="pk_worker_skills"),
        _worker_fk(),
        sa.ForeignKeyConstraint(
            ["skill_id"], [_in_ref("shared", "skills.id")], name="fk_worker_skills_skill_id_skills"
        ),
        schema=vwm,
    )
    op.create_index("ix_worker_skills_skill_id", "worker_skills", ["skill_id"], schema=vwm)
