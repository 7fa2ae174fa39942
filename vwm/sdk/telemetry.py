"""Telemetry calls (`client.telemetry`): per-job request records, totals per worker or session
(over a window, or per time bucket), and what auto-learning recorded."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from vwm.sdk.answers import rows_of
from vwm.sdk.models import Learning

if TYPE_CHECKING:
    from vwm.sdk.client import Client

TimeBound = datetime | str | None
"""A time filter: a datetime (sent as ISO 8601) or a string the control plane understands."""


class TelemetryAPI:
    def __init__(self, client: Client) -> None:
        self._client = client

    def requests(
        self,
        *,
        worker: str | None = None,
        session_id: str | None = None,
        since: TimeBound = None,
        until: TimeBound = None,
        limit: int | None = None,
        **filters: Any,
    ) -> list[dict[str, Any]]:
        """Request records (one per job: tokens, cost, durations, status), newest first."""
        params = {
            "worker": worker,
            "session_id": session_id,
            "since": _iso(since),
            "until": _iso(until),
            "limit": limit,
            **filters,
        }
        return rows_of(self._client.request("GET", "/v1/telemetry/requests", params=params))

    def summary(
        self, group_by: str = "worker", *, since: TimeBound = None, until: TimeBound = None
    ) -> list[dict[str, Any]]:
        """Totals per ``worker`` or ``session``: jobs, tokens, cost, durations."""
        params = {"group_by": group_by, "since": _iso(since), "until": _iso(until)}
        return rows_of(self._client.request("GET", "/v1/telemetry/summary", params=params))

    def series(
        self,
        group_by: str = "worker",
        bucket: str = "hour",
        *,
        since: TimeBound = None,
        until: TimeBound = None,
    ) -> list[dict[str, Any]]:
        """Totals per UTC ``bucket`` (``minute``, ``hour``, ``day``) and ``worker`` or
        ``session``, by bucket start then group: ``{start, worker|session, jobs, tokens,
        cost_usd}``; buckets without jobs are left out. Without ``since``: the last 24 hours
        (90 days by day) before ``until`` (default now). `ValidationError`
        ``too_many_buckets`` past 2000 buckets: narrow the window or take a larger bucket."""
        params = {
            "group_by": group_by,
            "bucket": bucket,
            "since": _iso(since),
            "until": _iso(until),
        }
        return rows_of(self._client.request("GET", "/v1/telemetry/series", params=params))

    def learnings(
        self,
        *,
        worker: str | None = None,
        session_id: str | None = None,
        status: str | None = None,
        since: TimeBound = None,
        until: TimeBound = None,
        limit: int | None = None,
    ) -> list[Learning]:
        """Auto-learning records, newest first. ``status``: ``recorded``, ``nothing`` or
        ``failed``; ``limit`` defaults to the control plane's (100)."""
        params = {
            "worker": worker,
            "session_id": session_id,
            "status": status,
            "since": _iso(since),
            "until": _iso(until),
            "limit": limit,
        }
        answer = self._client.request("GET", "/v1/telemetry/learnings", params=params)
        return [Learning.from_document(item) for item in rows_of(answer)]


def _iso(value: TimeBound) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else value
