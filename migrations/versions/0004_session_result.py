"""Sessions keep what ending them did to their repositories.

`vwm.sessions.result` holds the harness's shutdown outcome: per repository the commit made at the
end, whether and how it was pushed (``direct``, ``rebased`` after another session pushed first,
or ``fallback_branch`` when the work conflicted and went to ``vwm/<session id>``), the branch and
commit that hold the work, and where the transcript went. NULL until the session has ended.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# As the other JSON columns (0001): JSONB on PostgreSQL.
JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def _schema() -> str | None:
    return None if op.get_context().dialect.name == "sqlite" else "vwm"


def upgrade() -> None:
    with op.batch_alter_table("sessions", schema=_schema()) as batch:
        batch.add_column(sa.Column("result", JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sessions", schema=_schema()) as batch:
        batch.drop_column("result")
