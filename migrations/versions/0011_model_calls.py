"""Metered model calls: one row per call a job's CLI made through the session's proxy.

- `vw_telemetry.model_calls`: what each call asked and cost (`eventing.model_calls.ModelCall`),
  keyed by (job_id, seq) (budgets count `vwm.budget_charges`, not these rows).
- `vw_telemetry.requests` says where its token counts come from: `usage_source` ``metered``
  (the sum of the calls) or ``cli`` (the CLI's report, as before), `cli_usage` the CLI's own
  report beside a metered sum, `usage_mismatch` whether the two differ, `model_calls` how many
  calls were stored.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-10
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
# As in the models at this revision, so the CHECK below cannot drift from what the code writes.
OUTCOMES = ("http_error", "incomplete", "ok", "refused", "unreachable")
TOKENS = ("input", "cache_read", "cache_write", "output", "reasoning")
MAX_ERROR_CHARS = 2000


def _in(schema: str) -> str | None:
    """SQLite has no schemas: there every table goes unqualified (as in 0001)."""
    return None if op.get_context().dialect.name == "sqlite" else schema


def _in_ref(schema: str, column: str) -> str:
    qualifier = _in(schema)
    return f"{qualifier}.{column}" if qualifier else column


def _one_of(column: str, values: Sequence[str]) -> str:
    return f"{column} IN ({', '.join(repr(value) for value in values)})"


def _requests_columns() -> tuple[sa.Column, ...]:
    """Added with their CHECKs inline (an ALTER TABLE ADD COLUMN both dialects take)."""
    return (
        sa.Column(
            "usage_source",
            sa.String(16),
            sa.CheckConstraint(
                _one_of("usage_source", ("cli", "metered")), name=op.f("ck_requests_usage_source")
            ),
            nullable=False,
            server_default="cli",
        ),
        sa.Column("cli_usage", JSON, nullable=True),
        sa.Column("usage_mismatch", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column(
            "model_calls",
            sa.Integer(),
            sa.CheckConstraint(
                "model_calls >= 0", name=op.f("ck_requests_model_calls_non_negative")
            ),
            nullable=False,
            server_default="0",
        ),
    )


def upgrade() -> None:
    telemetry = _in("vw_telemetry")
    tokens = [f"{name}_tokens" for name in TOKENS]
    op.create_table(
        "model_calls",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("session_id", sa.String(32), nullable=False),
        sa.Column("worker_id", sa.String(32), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("api", sa.String(32), nullable=False),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("streamed", sa.Boolean(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        *(sa.Column(name, sa.BigInteger(), nullable=False) for name in tokens),
        sa.Column("complete", sa.Boolean(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("latency_ms", sa.Double(), nullable=False),
        sa.Column("ttft_ms", sa.Double(), nullable=True),
        sa.Column("error", sa.String(MAX_ERROR_CHARS), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_model_calls"),
        sa.ForeignKeyConstraint(
            ["job_id"], [_in_ref("vwm", "jobs.id")], name="fk_model_calls_job_id_jobs"
        ),
        sa.UniqueConstraint("job_id", "seq", name="uq_model_calls_job_id_seq"),
        sa.CheckConstraint(_one_of("outcome", OUTCOMES), name=op.f("ck_model_calls_outcome")),
        sa.CheckConstraint("seq >= 1", name=op.f("ck_model_calls_seq_positive")),
        sa.CheckConstraint(
            " AND ".join(f"{name} >= 0" for name in tokens),
            name=op.f("ck_model_calls_tokens_non_negative"),
        ),
        sa.CheckConstraint(
            "latency_ms >= 0 AND ttft_ms >= 0", name=op.f("ck_model_calls_durations_non_negative")
        ),
        schema=telemetry,
    )
    # Plain ADD COLUMNs, also on SQLite: a batch copy would drop tables others point at.
    for column in _requests_columns():
        op.add_column("requests", column, schema=telemetry)


def downgrade() -> None:
    telemetry = _in("vw_telemetry")
    for column in reversed(_requests_columns()):
        op.drop_column("requests", column.name, schema=telemetry)
    op.drop_table("model_calls", schema=telemetry)
