"""Setting versions: every value a system setting was given (`GET /v1/admin/settings/{key}/versions`).

- `vwm.system_setting_versions`: one row per (key, version) with the value and when it was
  written; `Settings.put` writes it in the same transaction as the setting. Its key refers to
  `vwm.system_settings` (ON DELETE CASCADE: a deleted setting takes its history along).
- Settings written before this revision had their earlier values overwritten: each gets its
  current value as its current version, so every setting has at least the row it is at.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-16
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As the other JSON columns (0001): JSONB on PostgreSQL.
JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
# As `UTCDateTime` (functions/db/columns.py) stores them.
TIMESTAMP = sa.DateTime(timezone=True)


def _in(schema: str) -> str | None:
    """SQLite has no schemas: there every table goes unqualified (as in 0001)."""
    return None if op.get_context().dialect.name == "sqlite" else schema


def upgrade() -> None:
    vwm = _in("vwm")
    versions = op.create_table(
        "system_setting_versions",
        sa.Column("key", sa.String(100), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("value", JSON, nullable=False),
        sa.Column("written_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("key", "version", name=op.f("pk_system_setting_versions")),
        sa.CheckConstraint(
            "version >= 1", name=op.f("ck_system_setting_versions_version_positive")
        ),
        sa.ForeignKeyConstraint(
            ["key"],
            ["system_settings.key" if vwm is None else f"{vwm}.system_settings.key"],
            name=op.f("fk_system_setting_versions_key_system_settings"),
            ondelete="CASCADE",
        ),
        schema=vwm,
    )
    # The settings as they are now, each as its current version (the value copied as stored).
    settings = sa.table(
        "system_settings",
        *(sa.column(name) for name in ("key", "version", "value", "updated_at")),
        schema=vwm,
    )
    op.execute(
        versions.insert().from_select(
            ["key", "version", "value", "written_at"],
            sa.select(settings.c.key, settings.c.version, settings.c.value, settings.c.updated_at),
        )
    )


def downgrade() -> None:
    op.drop_table("system_setting_versions", schema=_in("vwm"))
