"""Reading the shapes of API answers that every resource shares: listings and pages."""

from __future__ import annotations

from typing import Any

from vwm.errors import ProtocolError

_LIST_KEYS = ("items", "groups", "requests")


def rows_of(answer: Any) -> list[Any]:
    """The list inside a listing answer: the answer itself, or its ``items`` (``groups`` and
    ``requests`` are read too, for telemetry)."""
    if isinstance(answer, list):
        return answer
    if isinstance(answer, dict):
        for key in _LIST_KEYS:
            if isinstance(answer.get(key), list):
                return answer[key]
    raise ProtocolError(f"expected a list or {{items: [...]}}, got {str(answer)[:200]}")


def next_cursor(answer: Any) -> str | None:
    """The cursor of the next page, if there is one."""
    cursor = answer.get("next_cursor") if isinstance(answer, dict) else None
    return str(cursor) if cursor else None
