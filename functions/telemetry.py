"""The `telemetry` function: per-request records, and totals by worker or session, over a whole
window (`summary`) or per time bucket (`series`)."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any, Literal

from pydantic import ConfigDict, Field, TypeAdapter
from sqlalchemy import func, select
from sqlalchemy.orm import InstrumentedAttribute, Session
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from eventing.lazy_models import LazyModel
from functions.api import Endpoint
from functions.context import read
from functions.db.columns import utcnow
from functions.db.models import TelemetryRequest, Worker
from functions.http import ApiError, parse_query
from functions.params import Timestamp
from functions.telemetry_buckets import (
    MAX_BUCKETS,
    Bucket,
    bucket_count,
    bucket_start,
    window,
)
from functions.telemetry_learnings import ENDPOINTS as LEARNING_ENDPOINTS
from functions.usage_totals import usage_columns, usage_totals

T = TelemetryRequest


class RequestQuery(LazyModel):
    model_config = ConfigDict(extra="forbid")
    worker: str | None = Field(default=None, max_length=100)
    session_id: str | None = Field(default=None, max_length=64)
    since: Timestamp | None = None
    until: Timestamp | None = None
    limit: int = Field(default=100, ge=1, le=1000)
    include_raw: bool = False


GroupBy = Literal["worker", "session"]


class SummaryQuery(LazyModel):
    model_config = ConfigDict(extra="forbid")
    group_by: GroupBy = "worker"
    since: Timestamp | None = None
    until: Timestamp | None = None


class SeriesQuery(LazyModel):
    model_config = ConfigDict(extra="forbid")
    group_by: GroupBy = "worker"
    bucket: Bucket = "hour"
    since: Timestamp | None = Field(
        default=None,
        description="default: the start of the bucket 24 h (minute, hour) or 90 days (day) "
        "before until",
    )
    until: Timestamp | None = Field(default=None, description="default: now")


class Tokens(LazyModel):
    input: int
    cache_read: int
    cache_write: int
    output: int
    reasoning: int


class RequestRecord(LazyModel):
    job_id: str
    session_id: str
    worker: str | None
    cli: str
    cli_version: str | None = Field(
        description="the CLI's version as it reported it; null: unknown"
    )
    model: str | None = Field(
        description="the model the CLI reported, else the one the harness asked for"
    )
    status: str
    tokens: Tokens
    cost_usd: float | None
    cost_source: str | None
    durations_ms: dict[str, int | None]
    exit_code: int | None
    instructions_version: int
    worker_revision: int = Field(description="the worker's revision the job ran with; 0: none")
    usage_source: Literal["metered", "cli"] = Field(
        description="metered: `tokens` is the sum of the job's model calls; cli: the CLI's report"
    )
    cli_usage: Tokens | None = Field(
        description="the CLI's own report beside metered `tokens`; null: not kept"
    )
    usage_mismatch: bool = Field(description="the metered and CLI-reported tokens differ")
    model_calls: int = Field(description="model calls stored (GET /v1/jobs/{job_id}/calls)")
    created_at: datetime
    raw_output: str | None = None


class RequestList(LazyModel):
    items: list[RequestRecord]


class SummaryList(LazyModel):
    group_by: str
    items: list[dict[str, Any]]


class SeriesList(LazyModel):
    group_by: str
    bucket: str
    since: datetime = Field(description="the window's start, as given or defaulted")
    until: datetime = Field(description="the window's end (excluded), as given or defaulted")
    items: list[dict[str, Any]] = Field(
        description="{start, worker or session, jobs, tokens, cost_usd} per bucket and group "
        "with jobs, by start then group; buckets without jobs are left out"
    )


def _window(statement: Any, since: datetime | None, until: datetime | None) -> Any:
    if since is not None:
        statement = statement.where(T.created_at >= since)
    if until is not None:
        statement = statement.where(T.created_at < until)
    return statement


async def list_requests(request: Request) -> Response:
    query = parse_query(request, RequestQuery)

    def rows(session: Session) -> list[dict[str, Any]]:
        statement = select(T, Worker.name).outerjoin(Worker, Worker.id == T.worker_id)
        if query.worker:
            statement = statement.where(Worker.name == query.worker)
        if query.session_id:
            statement = statement.where(T.session_id == query.session_id)
        statement = _window(statement, query.since, query.until)
        statement = statement.order_by(T.created_at.desc()).limit(query.limit)
        return [_record(row, name, query.include_raw) for row, name in session.execute(statement)]

    return JSONResponse({"items": await read(rows)})


def _record(row: TelemetryRequest, worker: str | None, include_raw: bool) -> dict[str, Any]:
    return RequestRecord(
        job_id=row.job_id,
        session_id=row.session_id,
        worker=worker,
        cli=row.cli,
        cli_version=row.cli_version,
        model=row.model,
        status=row.status,
        tokens=Tokens(
            input=row.input_tokens,
            cache_read=row.cache_read_tokens,
            cache_write=row.cache_write_tokens,
            output=row.output_tokens,
            reasoning=row.reasoning_tokens,
        ),
        cost_usd=row.cost_usd,
        cost_source=row.cost_source,
        durations_ms={
            "queued": row.queued_ms,
            "cli_start": row.cli_start_ms,
            "first_output": row.first_output_ms,
            "total": row.total_ms,
        },
        exit_code=row.exit_code,
        instructions_version=row.instructions_version,
        worker_revision=row.worker_revision or 0,
        usage_source=row.usage_source,  # type: ignore[arg-type]  # its CHECK keeps it one of them
        cli_usage=Tokens.model_validate(row.cli_usage) if row.cli_usage is not None else None,
        usage_mismatch=row.usage_mismatch,
        model_calls=row.model_calls,
        created_at=row.created_at,
        raw_output=row.raw_output if include_raw else None,
    ).model_dump(mode="json")


# -- totals: one shape for a group over the window (summary) and per bucket (series) ----------


def _group(group_by: GroupBy) -> InstrumentedAttribute[str]:
    return Worker.name if group_by == "worker" else T.session_id


async def summary(request: Request) -> Response:
    query = parse_query(request, SummaryQuery)

    def rows(session: Session) -> list[dict[str, Any]]:
        key = _group(query.group_by)
        statement = select(key, *usage_columns(), func.avg(T.total_ms)).outerjoin(
            Worker, Worker.id == T.worker_id
        )
        statement = _window(statement, query.since, query.until).group_by(key).order_by(key)
        return [
            {
                query.group_by: group,
                **usage_totals(*totals),
                "avg_total_ms": float(avg) if avg is not None else None,
            }
            for group, *totals, avg in session.execute(statement)
        ]

    return JSONResponse({"group_by": query.group_by, "items": await read(rows)})


async def series(request: Request) -> Response:
    query = parse_query(request, SeriesQuery)
    since, until = window(query.bucket, query.since, query.until, utcnow())
    buckets = bucket_count(query.bucket, since, until)
    if buckets > MAX_BUCKETS:
        raise ApiError(
            422,
            "too_many_buckets",
            f"from {_iso(since)} to {_iso(until)} is {buckets} {query.bucket} "
            f"buckets, more than {MAX_BUCKETS}: narrow since/until or use a larger bucket",
            buckets=buckets,
            max_buckets=MAX_BUCKETS,
            bucket=query.bucket,
        )

    def rows(session: Session) -> list[dict[str, Any]]:
        key = _group(query.group_by)
        start = bucket_start(query.bucket, T.created_at, session.get_bind().dialect.name)
        statement = select(start, key, *usage_columns()).outerjoin(Worker, Worker.id == T.worker_id)
        statement = _window(statement, since, until).group_by(start, key)
        statement = statement.order_by(start, key.asc().nulls_last())
        return [
            {"start": _iso(begins), query.group_by: group, **usage_totals(*totals)}
            for begins, group, *totals in session.execute(statement)
        ]

    return JSONResponse(
        {
            "group_by": query.group_by,
            "bucket": query.bucket,
            "since": _iso(since),
            "until": _iso(until),
            "items": await read(rows),
        }
    )


def _iso(moment: datetime) -> str:
    """A UTC time as every answer writes it (pydantic's JSON: ``2026-06-01T10:00:00Z``)."""
    return str(_time_adapter().dump_python(moment, mode="json"))


@functools.cache
def _time_adapter() -> TypeAdapter[datetime]:
    # Made at first use, as the models are (eventing.lazy_models): not by the import.
    return TypeAdapter(datetime)


TAGS = ("telemetry",)
ENDPOINTS = [
    Endpoint(
        "GET",
        "/v1/telemetry/requests",
        list_requests,
        "Per-request telemetry records",
        query=RequestQuery,
        response=RequestList,
        tags=TAGS,
    ),
    Endpoint(
        "GET",
        "/v1/telemetry/summary",
        summary,
        "Totals by worker or session",
        query=SummaryQuery,
        response=SummaryList,
        tags=TAGS,
    ),
    Endpoint(
        "GET",
        "/v1/telemetry/series",
        series,
        "Totals per UTC time bucket (minute, hour, day) and worker or session; without since: "
        "from the start of the bucket 24 h (minute, hour) or 90 days (day) before until "
        f"(default: now); at most {MAX_BUCKETS} buckets, else 422 too_many_buckets",
        query=SeriesQuery,
        response=SeriesList,
        tags=TAGS,
    ),
]
ENDPOINTS += LEARNING_ENDPOINTS  # auto-learning records: functions/telemetry_learnings.py
