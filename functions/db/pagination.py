"""Keyset pagination: a page of rows and an opaque cursor naming the last row's
(created_at, id). Used by the repositories; the HTTP edge passes cursors through untouched."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, TypeVar

from functions.db.errors import InvalidCursor

T = TypeVar("T")
MAX_PAGE_SIZE = 500
_ROW_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # ids are ASCII (`columns.new_id`)


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None  # None: this is the last page


def encode_cursor(created_at: datetime, row_id: str) -> str:
    raw = json.dumps([created_at.isoformat(), row_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The (created_at, id) a cursor names; anything we did not issue is `InvalidCursor`,
    including what would fail only in the query (a NUL, a time outside the UTC range)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, row_id = json.loads(raw)
        parsed = datetime.fromisoformat(created_at)
        if parsed.tzinfo is not None:
            parsed = parsed.astimezone(UTC)
    except (ValueError, TypeError, OverflowError, RecursionError) as error:
        raise InvalidCursor(cursor) from error
    if parsed.tzinfo is None or not isinstance(row_id, str) or not _ROW_ID.fullmatch(row_id):
        raise InvalidCursor(cursor)
    return parsed, row_id
