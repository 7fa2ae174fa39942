"""The `events` function's tables: the events it has handled, and jobs' event logs.

`vwm.processed_events` holds the `source` + `id` of every CloudEvent handled, so a redelivered
event changes nothing. `vwm.job_events` holds each job's normalized events, one row per (job,
seq), as `dev.vwm.job.output` batches deliver them, for replay without the 256 KiB bound of the
telemetry row's `event_log`.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As the other JSON columns (0001): JSONB on PostgreSQL.
JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
# As `UTCDateTime` (functions/db/columns.py) stores them.
TIMESTAMP = sa.DateTime(timezone=True)


def _schema() -> str | None:
    return None if op.get_context().dialect.name == "sqlite" else "vwm"


def upgrade() -> None:
    op.create_table(
        "processed_events",
        sa.Column("source", sa.String(1024), nullable=False),
        sa.Column("id", sa.String(200), nullable=False),
        sa.Column("type", sa.String(100), nullable=False),
        sa.Column("processed_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("source", "id", name=op.f("pk_processed_events")),
        schema=_schema(),
    )
    jobs = "jobs" if _schema() is None else "vwm.jobs"
    op.create_table(
        "job_events",
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("data", JSON, nullable=False),
        sa.Column("ts", sa.Double(), nullable=False),
        sa.CheckConstraint("seq >= 1", name=op.f("ck_job_events_seq_positive")),
        sa.ForeignKeyConstraint(["job_id"], [f"{jobs}.id"], name=op.f("fk_job_events_job_id_jobs")),
        sa.PrimaryKeyConstraint("job_id", "seq", name=op.f("pk_job_events")),
        schema=_schema(),
    )


def downgrade() -> None:
    op.drop_table("job_events", schema=_schema())
    op.drop_table("processed_events", schema=_schema())
