"""Auto-learning records in the `telemetry` function: ``GET /v1/telemetry/learnings``, what each
learning run taught its worker (`functions.learning` writes them), newest first."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from eventing.lazy_models import LazyModel
from functions.api import Endpoint
from functions.context import db
from functions.db.models import Learning, Worker
from functions.http import parse_query
from functions.params import Timestamp


class LearningQuery(LazyModel):
    model_config = ConfigDict(extra="forbid")
    worker: str | None = Field(default=None, max_length=100)
    session_id: str | None = Field(default=None, max_length=64)
    status: Literal["recorded", "nothing", "failed"] | None = None
    since: Timestamp | None = None
    until: Timestamp | None = None
    limit: int = Field(default=100, ge=1, le=1000)


class LearningTokens(LazyModel):
    input: int
    cache_read: int
    cache_write: int
    output: int


class LearningRecord(LazyModel):
    id: str
    session_id: str
    job_id: str | None
    worker: str | None
    status: str = Field(description="recorded, nothing (nothing worth keeping) or failed")
    mode: str = Field(description="direct (the worker repo's branch) or review (its own branch)")
    summary: str
    files_changed: list[str]
    commit: str | None
    branch: str | None = Field(description="where the commit was pushed; null if it was not")
    error: dict[str, Any] | None
    prompt_version: int = Field(description="the learning_prompt setting's version; 0: default")
    tokens: LearningTokens
    cost_usd: float | None
    created_at: datetime


class LearningList(LazyModel):
    items: list[LearningRecord]


async def list_learnings(request: Request) -> Response:
    query = parse_query(request, LearningQuery)

    def rows(session: Session) -> list[dict[str, Any]]:
        L = Learning
        statement = select(L, Worker.name).outerjoin(Worker, Worker.id == L.worker_id)
        if query.worker:
            statement = statement.where(Worker.name == query.worker)
        if query.session_id:
            statement = statement.where(L.session_id == query.session_id)
        if query.status:
            statement = statement.where(L.status == query.status)
        if query.since is not None:
            statement = statement.where(L.created_at >= query.since)
        if query.until is not None:
            statement = statement.where(L.created_at < query.until)
        statement = statement.order_by(L.created_at.desc(), L.id).limit(query.limit)
        return [_record(row, name) for row, name in session.execute(statement)]

    return JSONResponse({"items": await db(rows)})


def _record(row: Learning, worker: str | None) -> dict[str, Any]:
    return LearningRecord(
        id=row.id,
        session_id=row.session_id,
        job_id=row.job_id,
        worker=worker,
        status=row.status,
        mode=row.mode,
        summary=row.summary,
        files_changed=[str(path) for path in row.files_changed or []],
        commit=row.commit_sha,
        branch=row.branch,
        error=row.error,
        prompt_version=row.prompt_version,
        tokens=LearningTokens(
            input=row.input_tokens,
            cache_read=row.cache_read_tokens,
            cache_write=row.cache_write_tokens,
            output=row.output_tokens,
        ),
        cost_usd=row.cost_usd,
        created_at=row.created_at,
    ).model_dump(mode="json")


ENDPOINTS = [
    Endpoint(
        "GET",
        "/v1/telemetry/learnings",
        list_learnings,
        "What auto-learning runs recorded, newest first",
        query=LearningQuery,
        response=LearningList,
        tags=("telemetry",),
    ),
]
