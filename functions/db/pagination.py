"""Keyset pagination: a page of rows and an opaque cursor naming the last row's
(created_at, id). Used by the repositories; the HTTP edge passes cursors through untouched."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from functions.db.errors import InvalidCursor

T = TypeVar("T")
MAX_PAGE_SIZE = 500


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None  # None: this is the last page


def encode_cursor(created_at: datetime, row_id: str) -> str:
    raw = json.dumps([created_at.isoformat(), row_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, row_id = json.loads(raw)
        parsed = datetime.fromisoformat(created_at)
    except (ValueError, TypeError) as error:
        raise InvalidCursor(cursor) from error
    if parsed.tzinfo is None or not isinstance(row_id, str):
        raise InvalidCursor(cursor)
    return parsed, row_id
