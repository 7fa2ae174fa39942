"""The embedded broker's queue and the control plane's outbox.

`vwm.broker_events` holds each event the broker of `vwm up` accepted, once per `source` + `id`;
`vwm.broker_deliveries` one row per (event, subscription) that matched, with its attempts, the
next attempt's time, the lease of the loop delivering it and the last answer. `vwm.outbox` holds
the control plane's own events until they are published (docs/broker.md, docs/events.md).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As `UTCDateTime` (functions/db/columns.py) stores them.
TIMESTAMP = sa.DateTime(timezone=True)


def _schema() -> str | None:
    return None if op.get_context().dialect.name == "sqlite" else "vwm"


def upgrade() -> None:
    schema = _schema()
    op.create_table(
        "broker_events",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("source", sa.String(1024), nullable=False),
        sa.Column("id", sa.String(200), nullable=False),
        sa.Column("type", sa.String(100), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("received_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_broker_events")),
        sa.UniqueConstraint("source", "id", name=op.f("uq_broker_events_source_id")),
        schema=schema,
    )
    op.create_index(
        op.f("ix_broker_events_received_at"), "broker_events", ["received_at"], schema=schema
    )
    events = "broker_events" if schema is None else "vwm.broker_events"
    op.create_table(
        "broker_deliveries",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("event_seq", sa.Integer(), nullable=False),
        sa.Column("subscription", sa.String(200), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", TIMESTAMP, nullable=False),
        sa.Column("leased_until", TIMESTAMP, nullable=True),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_answer", sa.Text(), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.CheckConstraint(
            "state IN ('dead', 'delivered', 'pending')", name=op.f("ck_broker_deliveries_state")
        ),
        sa.CheckConstraint(
            "attempts >= 0", name=op.f("ck_broker_deliveries_attempts_non_negative")
        ),
        sa.ForeignKeyConstraint(
            ["event_seq"],
            [f"{events}.seq"],
            name=op.f("fk_broker_deliveries_event_seq_broker_events"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_broker_deliveries")),
        sa.UniqueConstraint(
            "event_seq", "subscription", name=op.f("uq_broker_deliveries_event_seq_subscription")
        ),
        schema=schema,
    )
    op.create_index(
        op.f("ix_broker_deliveries_state_next_attempt_at"),
        "broker_deliveries",
        ["state", "next_attempt_at"],
        schema=schema,
    )
    op.create_table(
        "outbox",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("source", sa.String(1024), nullable=False),
        sa.Column("id", sa.String(200), nullable=False),
        sa.Column("type", sa.String(100), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("answer", sa.Text(), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("dead_at", TIMESTAMP, nullable=True),
        sa.CheckConstraint("state IN ('dead', 'pending')", name=op.f("ck_outbox_state")),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_outbox")),
        schema=schema,
    )
    op.create_index(op.f("ix_outbox_state_seq"), "outbox", ["state", "seq"], schema=schema)


def downgrade() -> None:
    schema = _schema()
    op.drop_index(op.f("ix_outbox_state_seq"), table_name="outbox", schema=schema)
    op.drop_table("outbox", schema=schema)
    op.drop_index(
        op.f("ix_broker_deliveries_state_next_attempt_at"),
        table_name="broker_deliveries",
        schema=schema,
    )
    op.drop_table("broker_deliveries", schema=schema)
    op.drop_index(op.f("ix_broker_events_received_at"), table_name="broker_events", schema=schema)
    op.drop_table("broker_events", schema=schema)
