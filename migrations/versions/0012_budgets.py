"""Budgets: limits on what a worker's and a session's model calls may cost, and the charges
that count against them (functions.budgets, docs/budgets.md).

- `vwm.workers`: billed tokens and USD per UTC day and in total (`budget_*`, NULL: no limit);
- `vwm.sessions`: billed tokens and USD over the session (`budget_tokens`, `budget_usd`);
- `vwm.budget_charges`: one row per charged model call, keyed by (job_id, seq) so a charge sent
  again counts once; indexed by (worker_id, charged_at) and by session_id for the sums.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-12
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As in the models at this revision.
WORKER_LIMITS = (
    ("budget_tokens_per_day", sa.BigInteger),
    ("budget_tokens_total", sa.BigInteger),
    ("budget_usd_per_day", sa.Double),
    ("budget_usd_total", sa.Double),
)
SESSION_LIMITS = (("budget_tokens", sa.BigInteger), ("budget_usd", sa.Double))


def _in(schema: str) -> str | None:
    """SQLite has no schemas: there every table goes unqualified (as in 0001)."""
    return None if op.get_context().dialect.name == "sqlite" else schema


def _limits(table: str, columns: Sequence[tuple[str, type[sa.types.TypeEngine]]]) -> list:
    """Nullable columns with their CHECKs inline (an ALTER TABLE ADD COLUMN both dialects
    take)."""
    return [
        sa.Column(
            name,
            kind(),
            sa.CheckConstraint(f"{name} >= 0", name=op.f(f"ck_{table}_{name}_non_negative")),
            nullable=True,
        )
        for name, kind in columns
    ]


def upgrade() -> None:
    vwm = _in("vwm")
    for column in _limits("workers", WORKER_LIMITS):
        op.add_column("workers", column, schema=vwm)
    for column in _limits("sessions", SESSION_LIMITS):
        op.add_column("sessions", column, schema=vwm)
    op.create_table(
        "budget_charges",
        sa.Column("job_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("session_id", sa.String(32), nullable=False),
        sa.Column("worker_id", sa.String(32), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.Column("usd", sa.Double(), nullable=False),
        sa.Column("charged_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("job_id", "seq", name="pk_budget_charges"),
        sa.CheckConstraint(
            "seq >= 0 AND tokens >= 0 AND usd >= 0", name=op.f("ck_budget_charges_non_negative")
        ),
        schema=vwm,
    )
    op.create_index(
        "ix_budget_charges_worker_id_charged_at",
        "budget_charges",
        ["worker_id", "charged_at"],
        schema=vwm,
    )
    op.create_index("ix_budget_charges_session_id", "budget_charges", ["session_id"], schema=vwm)


def downgrade() -> None:
    vwm = _in("vwm")
    op.drop_index("ix_budget_charges_session_id", "budget_charges", schema=vwm)
    op.drop_index("ix_budget_charges_worker_id_charged_at", "budget_charges", schema=vwm)
    op.drop_table("budget_charges", schema=vwm)
    for name, _ in reversed(SESSION_LIMITS):
        op.drop_column("sessions", name, schema=vwm)
    for name, _ in reversed(WORKER_LIMITS):
        op.drop_column("workers", name, schema=vwm)
