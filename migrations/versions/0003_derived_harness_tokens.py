"""Harness tokens are derived, no longer stored: drop `token` from every session's runtime state.

Before this revision the local runtime backend kept each session's harness token in
`vwm.sessions.runtime_state` (``{"state": {..., "token": ...}}``). Tokens are now an HMAC of the
session id under the control plane's key (docs/runtime.md). A harness started before the upgrade
still holds its old token: the backend sees it refuse the derived one and replaces it on the next
`ensure_running` (`vwm up` does that for every ready session on start).

On SQLite the old values are overwritten in place (`secure_delete`), so the tokens do not linger
in free pages of the file. The downgrade cannot bring the tokens back and leaves the rows as
they are: a downgraded control plane cannot reach the harnesses of sessions that were live
then, so end those sessions before downgrading.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_context().dialect.name == "sqlite":
        op.execute("PRAGMA secure_delete = ON")
        op.execute(
            "UPDATE sessions SET runtime_state = json_remove(runtime_state, '$.state.token') "
            "WHERE json_extract(runtime_state, '$.state.token') IS NOT NULL"
        )
    else:
        op.execute(
            "UPDATE vwm.sessions SET runtime_state = runtime_state #- '{state,token}' "
            "WHERE runtime_state #> '{state,token}' IS NOT NULL"
        )


def downgrade() -> None:
    pass  # a derived token cannot be stored back; see the module docstring
