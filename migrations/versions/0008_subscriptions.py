"""User subscriptions to VWM's CloudEvents.

`vwm.subscriptions` holds what clients made with ``POST /v1/subscriptions``: a unique `name`,
Knative ``filters``, the http(s) `sink`, an optional Knative ``delivery`` spec and the scope of
the key that made it. The embedded broker routes to them (docs/events.md, "Subscribing").

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As `UTCDateTime` and `Json` (functions/db/columns.py) store them.
TIMESTAMP = sa.DateTime(timezone=True)
JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def _schema() -> str | None:
    return None if op.get_context().dialect.name == "sqlite" else "vwm"


def upgrade() -> None:
    op.create_table(
        "subscriptions",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("filters", JSON, nullable=False),
        sa.Column("sink", sa.String(2048), nullable=False),
        sa.Column("delivery", JSON, nullable=True),
        sa.Column("created_by", sa.String(16), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscriptions")),
        sa.UniqueConstraint("name", name=op.f("uq_subscriptions_name")),
        schema=_schema(),
    )


def downgrade() -> None:
    op.drop_table("subscriptions", schema=_schema())
