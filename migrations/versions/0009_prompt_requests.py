"""Jobs asked for by `dev.vwm.prompt.requested` events: who asked, and where the answer goes.

`vwm.jobs.causation_id` is the id of the event the job runs (its job id is derived from the
event's source + id); every event of the job carries it as `causationid`. `vwm.jobs.reply_to`
is the URL the job's final event is also sent to, if the request named one.

A session still runs one job at a time, but the harness is now what decides it: prompt
requests for a busy session wait for their turn there, so their jobs sit `queued` beside the
running one. The unique index on a session's active jobs becomes a plain one (the reconciler
and the busy check read it); the control plane refuses a sync or stream prompt on a busy
session under the session row's lock (`functions.db.transitions.start_job`).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACTIVE_JOB = "status IN ('queued', 'running')"


def _schema() -> str | None:
    return None if op.get_context().dialect.name == "sqlite" else "vwm"


def upgrade() -> None:
    schema = _schema()
    op.add_column("jobs", sa.Column("causation_id", sa.String(200), nullable=True), schema=schema)
    op.add_column("jobs", sa.Column("reply_to", sa.Text(), nullable=True), schema=schema)
    op.drop_index("uq_jobs_one_active_per_session", table_name="jobs", schema=schema)
    op.create_index(
        "ix_jobs_active_per_session",
        "jobs",
        ["session_id"],
        schema=schema,
        postgresql_where=sa.text(ACTIVE_JOB),
        sqlite_where=sa.text(ACTIVE_JOB),
    )


def downgrade() -> None:
    schema = _schema()
    op.drop_index("ix_jobs_active_per_session", table_name="jobs", schema=schema)
    op.create_index(
        "uq_jobs_one_active_per_session",
        "jobs",
        ["session_id"],
        unique=True,
        schema=schema,
        postgresql_where=sa.text(ACTIVE_JOB),
        sqlite_where=sa.text(ACTIVE_JOB),
    )
    op.drop_column("jobs", "reply_to", schema=schema)
    op.drop_column("jobs", "causation_id", schema=schema)
