"""Telemetry keeps the job's normalized event log beside the CLI's raw output.

`raw_output` now holds the CLI's literal stdout (bounded); `event_log` the job's event log
(bounded), from which a finished job's events are replayed once its session is gone.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _schema() -> str | None:
    return None if op.get_context().dialect.name == "sqlite" else "vw_telemetry"


def upgrade() -> None:
    with op.batch_alter_table("requests", schema=_schema()) as batch:
        batch.add_column(sa.Column("event_log", sa.Text(), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("requests", schema=_schema()) as batch:
        batch.drop_column("event_log")
