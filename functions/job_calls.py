"""``GET /v1/jobs/{job_id}/calls``: a job's metered model calls, in the order they started.

Served by the `prompts` function, with the other `/v1/jobs` paths. The calls are stored when the
job finishes (`functions.call_records`), so a job still running, or one run without a meter,
lists none; an unknown job is 404 `not_found`.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from pydantic import ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from eventing.agent_events import Usage
from eventing.lazy_models import LazyModel
from eventing.model_calls import CallOutcome
from functions.api import Endpoint
from functions.context import read
from functions.db.errors import InvalidCursor
from functions.db.models import ModelCallRecord
from functions.db.repositories import Jobs
from functions.http import parse_query

_SEQ_CURSOR = re.compile(r"[0-9]{1,10}")  # the seq of the last call on the page before


class CallQuery(LazyModel):
    model_config = ConfigDict(extra="forbid")
    limit: int = Field(default=100, ge=1, le=500)
    cursor: str | None = Field(default=None, max_length=500)


class CallOut(LazyModel):
    """A `eventing.model_calls.ModelCall` as stored; `started_at` as an ISO 8601 time."""

    seq: int
    api: str
    model: str | None
    streamed: bool
    status: int | None = Field(description="the provider's HTTP status; null: never reached")
    outcome: CallOutcome
    usage: Usage
    complete: bool = Field(description="the final usage was read")
    started_at: datetime
    latency_ms: float = Field(description="request start to the answer's last byte")
    ttft_ms: float | None = Field(description="request start to the first content byte")
    error: str | None


class CallList(LazyModel):
    items: list[CallOut]
    next_cursor: str | None


def call_out(row: ModelCallRecord) -> dict[str, Any]:
    return CallOut(
        seq=row.seq,
        api=row.api,
        model=row.model,
        streamed=row.streamed,
        status=row.status,
        outcome=row.outcome,  # type: ignore[arg-type]  # the column's CHECK keeps it one of them
        usage=Usage(
            input=row.input_tokens,
            cache_read=row.cache_read_tokens,
            cache_write=row.cache_write_tokens,
            output=row.output_tokens,
            reasoning=row.reasoning_tokens,
        ),
        complete=row.complete,
        started_at=row.started_at,
        latency_ms=row.latency_ms,
        ttft_ms=row.ttft_ms,
        error=row.error,
    ).model_dump(mode="json")


async def list_calls(request: Request) -> Response:
    job_id = request.path_params["job_id"]
    query = parse_query(request, CallQuery)
    after = _after(query.cursor)

    def page(session: Session) -> dict[str, Any]:
        Jobs(session).get(job_id)  # 404 for a job that does not exist
        rows = list(
            session.scalars(
                select(ModelCallRecord)
                .where(ModelCallRecord.job_id == job_id, ModelCallRecord.seq > after)
                .order_by(ModelCallRecord.seq)
                .limit(query.limit + 1)
            )
        )
        more = len(rows) > query.limit
        rows = rows[: query.limit]
        return {
            "items": [call_out(row) for row in rows],
            "next_cursor": str(rows[-1].seq) if more else None,
        }

    return JSONResponse(await read(page))


def _after(cursor: str | None) -> int:
    if cursor is None:
        return 0
    if not _SEQ_CURSOR.fullmatch(cursor):
        raise InvalidCursor(cursor)
    return int(cursor)


ENDPOINTS = [
    Endpoint(
        "GET",
        "/v1/jobs/{job_id}/calls",
        list_calls,
        "A job's metered model calls, in order",
        query=CallQuery,
        response=CallList,
        other_statuses=(400, 404),
        tags=("prompts",),
    ),
]
