"""Telemetry at rest: one record per finished job, learnings, and usage summaries grouped by
worker or session over a time window. Written by the events function when a job finishes (at
least once, so writes are idempotent on the job id); read by the telemetry function.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import InstrumentedAttribute, Session

from functions.db.models import TOKEN_COLUMNS, Learning, TelemetryRequest

RAW_OUTPUT_LIMIT = 256 * 1024
MAX_LIST = 1000
GroupBy = Literal["worker", "session"]


def bound_raw_output(text: str, limit: int = RAW_OUTPUT_LIMIT) -> str:
    """`text` cut to at most `limit` UTF-8 bytes, keeping its head and tail around a marker that
    says how much was left out. NUL characters (PostgreSQL text cannot hold them) become U+FFFD."""
    if limit < 256:
        raise ValueError(f"limit {limit} is too small to hold a head, a tail and the marker")
    text = text.replace("\x00", "\ufffd")
    data = text.encode()
    if len(data) <= limit:
        return text
    budget = limit - len(_marker(len(data)).encode())  # the longest marker this text can need
    head = data[: budget // 2].decode(errors="ignore")
    tail = data[len(data) - (budget - budget // 2) :].decode(errors="ignore")
    omitted = len(data) - len(head.encode()) - len(tail.encode())
    return head + _marker(omitted) + tail


def _marker(omitted: int) -> str:
    return f"\n[... {omitted} bytes of output omitted ...]\n"


@dataclass(frozen=True)
class UsageSummary:
    key: str  # the worker id or session id the totals are for
    jobs: int
    input_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    output_tokens: int
    reasoning_tokens: int
    cost_usd: float  # the sum of known costs
    jobs_without_cost: int  # jobs whose cost is unknown and not in `cost_usd`
    avg_total_ms: float | None
    p50_total_ms: float | None


class Telemetry:
    def __init__(self, db: Session) -> None:
        self.db = db

    def record_request(self, **fields: Any) -> TelemetryRequest:
        """Store the record of a finished job, or return the one already stored for that job
        (event redelivery). `raw_output` is bounded here as a last line of defence."""
        job_id = fields["job_id"]
        if existing := self._request_for(job_id):
            return existing
        if "raw_output" in fields:
            fields["raw_output"] = bound_raw_output(fields["raw_output"])
        record = TelemetryRequest(**fields)
        try:
            with self.db.begin_nested():
                self.db.add(record)
        except IntegrityError:
            if existing := self._request_for(job_id):
                return existing
            raise
        return record

    def requests(
        self,
        *,
        worker_id: str | None = None,
        session_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
    ) -> list[TelemetryRequest]:
        """Newest first; `since` inclusive, `until` exclusive."""
        if not 1 <= limit <= MAX_LIST:
            raise ValueError(f"limit must be between 1 and {MAX_LIST}, not {limit}")
        query = select(TelemetryRequest).where(
            *_window(since, until),
            *_equals(TelemetryRequest.worker_id, worker_id),
            *_equals(TelemetryRequest.session_id, session_id),
        )
        query = query.order_by(TelemetryRequest.created_at.desc(), TelemetryRequest.id.desc())
        return list(self.db.scalars(query.limit(limit)))

    def summary(
        self, group_by: GroupBy, *, since: datetime | None = None, until: datetime | None = None
    ) -> list[UsageSummary]:
        """Totals per worker or per session over [since, until), ordered by key."""
        group = {"worker": TelemetryRequest.worker_id, "session": TelemetryRequest.session_id}[
            group_by
        ]
        window = _window(since, until)
        totals = (
            select(
                group,
                func.count(),
                *(func.coalesce(func.sum(getattr(TelemetryRequest, c)), 0) for c in TOKEN_COLUMNS),
                func.coalesce(func.sum(TelemetryRequest.cost_usd), 0.0),
                func.count(TelemetryRequest.cost_usd),
                func.avg(TelemetryRequest.total_ms),
            )
            .where(*window)
            .group_by(group)
            .order_by(group)
        )
        medians = self._medians(group, window)
        summaries = []
        for key, jobs, *tokens, cost, with_cost, avg_ms in self.db.execute(totals):
            input_tokens, cache_read, cache_write, output, reasoning = (int(t) for t in tokens)
            summaries.append(
                UsageSummary(
                    key=key,
                    jobs=jobs,
                    input_tokens=input_tokens,
                    cache_read_tokens=cache_read,
                    cache_write_tokens=cache_write,
                    output_tokens=output,
                    reasoning_tokens=reasoning,
                    cost_usd=float(cost),
                    jobs_without_cost=jobs - with_cost,
                    avg_total_ms=None if avg_ms is None else float(avg_ms),
                    p50_total_ms=medians.get(key),
                )
            )
        return summaries

    def _medians(
        self, group: InstrumentedAttribute[str], window: list[ColumnElement[bool]]
    ) -> dict[str, float]:
        """The median total_ms per group, the same way on PostgreSQL and SQLite: rank the
        durations in each group and average the middle one (odd count) or two (even count)."""
        ranked = (
            select(
                group.label("key"),
                TelemetryRequest.total_ms.label("ms"),
                func.row_number()
                .over(partition_by=group, order_by=TelemetryRequest.total_ms)
                .label("rank"),
                func.count().over(partition_by=group).label("n"),
            )
            .where(*window, TelemetryRequest.total_ms.is_not(None))
            .subquery()
        )
        middle = or_(ranked.c.rank == (ranked.c.n + 1) // 2, ranked.c.rank == (ranked.c.n + 2) // 2)
        query = select(ranked.c.key, func.avg(ranked.c.ms)).where(middle).group_by(ranked.c.key)
        return {key: float(median) for key, median in self.db.execute(query)}

    def _request_for(self, job_id: str) -> TelemetryRequest | None:
        return self.db.scalar(select(TelemetryRequest).where(TelemetryRequest.job_id == job_id))

    def record_learning(self, **fields: Any) -> Learning:
        """Store a learning; with a `job_id`, at most once per job (event redelivery)."""
        job_id = fields.get("job_id")
        if job_id is not None and (existing := self._learning_for(job_id)):
            return existing
        learning = Learning(**fields)
        try:
            with self.db.begin_nested():
                self.db.add(learning)
        except IntegrityError:
            if job_id is not None and (existing := self._learning_for(job_id)):
                return existing
            raise
        return learning

    def learnings(
        self, *, worker_id: str | None = None, session_id: str | None = None, limit: int = 100
    ) -> list[Learning]:
        query = select(Learning).where(
            *_equals(Learning.worker_id, worker_id), *_equals(Learning.session_id, session_id)
        )
        query = query.order_by(Learning.created_at.desc(), Learning.id.desc())
        return list(self.db.scalars(query.limit(limit)))

    def _learning_for(self, job_id: str) -> Learning | None:
        return self.db.scalar(select(Learning).where(Learning.job_id == job_id))


def _window(since: datetime | None, until: datetime | None) -> list[ColumnElement[bool]]:
    created = TelemetryRequest.created_at
    return [
        *([created >= since] if since is not None else []),
        *([created < until] if until is not None else []),
    ]


def _equals(column: InstrumentedAttribute[str], value: str | None) -> list[ColumnElement[bool]]:
    return [] if value is None else [column == value]
