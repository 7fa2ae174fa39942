"""The instructions version a session's harness was given, and the one each job ran with.

`vwm.sessions.instructions_version` replaces a per-process cache of the control plane: any
replica learns from the row whether a session's harness has the current global instructions.
`vwm.jobs.instructions_version` is stamped when the job is dispatched, so whoever records the
job (the `events` function, the reconciler) writes the version it really ran with.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _schema() -> str | None:
    return None if op.get_context().dialect.name == "sqlite" else "vwm"


def upgrade() -> None:
    # A plain ADD COLUMN, also on SQLite: a batch copy of `jobs` would have to drop a table
    # that other tables' foreign keys point at.
    for table in ("sessions", "jobs"):
        op.add_column(
            table, sa.Column("instructions_version", sa.Integer(), nullable=True), schema=_schema()
        )


def downgrade() -> None:
    for table in ("jobs", "sessions"):
        op.drop_column(table, "instructions_version", schema=_schema())
