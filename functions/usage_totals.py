"""Telemetry totals in one shape wherever they are summed: jobs, the five token sums and the
summed cost of a set of `vw_telemetry.requests` rows (`functions.telemetry`'s summary and series,
`functions.session_activity`'s per-session activity)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, func

from functions.db.models import TelemetryRequest as T


def usage_columns() -> tuple[ColumnElement[Any], ...]:
    """Jobs, the five token sums and the summed cost; `usage_totals` reads them back."""
    return (
        func.count(T.id),
        func.sum(T.input_tokens),
        func.sum(T.cache_read_tokens),
        func.sum(T.cache_write_tokens),
        func.sum(T.output_tokens),
        func.sum(T.reasoning_tokens),
        func.sum(T.cost_usd),
    )


def usage_totals(jobs: int, i: Any, cr: Any, cw: Any, o: Any, r: Any, cost: Any) -> dict[str, Any]:
    """`jobs`, `tokens` and `cost_usd` (the sum of known costs; null when none is known). The
    token sums are made ints: PostgreSQL sums BIGINTs as NUMERIC, which arrives as a Decimal."""
    return {
        "jobs": jobs,
        "tokens": {
            "input": int(i or 0),
            "cache_read": int(cr or 0),
            "cache_write": int(cw or 0),
            "output": int(o or 0),
            "reasoning": int(r or 0),
        },
        "cost_usd": None if cost is None else float(cost),
    }
