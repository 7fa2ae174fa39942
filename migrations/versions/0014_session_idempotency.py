"""Sessions take an idempotency key: `POST /v1/sessions` sent again with the same key (after a
timeout, a crash of the caller) answers the session the first one made instead of a second.

`vwm.sessions.idempotency_key`: the caller's key, unique per worker (NULL for sessions made
without one, which never collide): a unique index.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _schema() -> str | None:
    return None if op.get_context().dialect.name == "sqlite" else "vwm"


def upgrade() -> None:
    schema = _schema()
    # A plain ALTER TABLE: in batch mode SQLite rebuilds the table, which the rows of the
    # tables referring to it (jobs, requests) refuse.
    op.add_column("sessions", sa.Column("idempotency_key", sa.String(200)), schema=schema)
    # An index, not a constraint: SQLite adds one without rebuilding the table, which its
    # foreign keys (jobs, requests) would refuse.
    op.create_index(
        "uq_sessions_worker_id_idempotency_key",
        "sessions",
        ["worker_id", "idempotency_key"],
        unique=True,
        schema=schema,
    )


def downgrade() -> None:
    schema = _schema()
    op.drop_index("uq_sessions_worker_id_idempotency_key", table_name="sessions", schema=schema)
    op.drop_column("sessions", "idempotency_key", schema=schema)  # no rebuild either
