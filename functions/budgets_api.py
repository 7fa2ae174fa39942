"""The budget endpoints (functions.budgets, docs/budgets.md): a worker's limits under the admin
API, a session's under the sessions API, and the charges a session's meter sends.

`POST /v1/sessions/{id}/charges` takes no API key: the harness of that session calls it with
its charge token (`TokenKey.charge_token`), which the API-key middleware lets through
(`functions.http.is_self_authenticated`) and this module checks.
"""

from __future__ import annotations

import hmac
from typing import Any

from pydantic import ConfigDict, Field
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from eventing.budgets import BudgetState, Charge
from eventing.lazy_models import LazyModel
from functions import budgets
from functions.api import Endpoint
from functions.context import db, settings, token_key
from functions.db.models import Worker, WorkerSession
from functions.db.repositories import Sessions, Workers
from functions.http import ApiError, parse_body

MAX_TOKENS = 1 << 62  # fits the BIGINT column with room to add
MAX_USD = 1e12
CHARGE_BODY_BYTES = 64 << 10


class WorkerBudgetIn(LazyModel):
    """Fields left out keep their value; null removes the limit."""

    model_config = ConfigDict(extra="forbid")
    tokens_per_day: int | None = Field(default=None, ge=0, le=MAX_TOKENS)
    tokens_total: int | None = Field(default=None, ge=0, le=MAX_TOKENS)
    usd_per_day: float | None = Field(default=None, ge=0, le=MAX_USD)
    usd_total: float | None = Field(default=None, ge=0, le=MAX_USD)


class SessionBudgetIn(LazyModel):
    """Over the session's life. Fields left out keep their value; null removes the limit."""

    model_config = ConfigDict(extra="forbid")
    tokens: int | None = Field(default=None, ge=0, le=MAX_TOKENS)
    usd: float | None = Field(default=None, ge=0, le=MAX_USD)


class WorkerBudgetOut(LazyModel):
    limits: dict[str, int | float | None]
    used: dict[str, int | float] = Field(description="today (UTC) and in total")
    left: dict[str, int | float | None] = Field(description="null: no limit")


class SessionBudgetOut(LazyModel):
    limits: dict[str, int | float | None]
    used: dict[str, int | float]
    left: dict[str, int | float | None] = Field(description="null: no limit")
    state: BudgetState = Field(
        description="what the session's meter is told now, its worker's budgets included"
    )


def set_session_limits(row: WorkerSession, body: SessionBudgetIn) -> None:
    for name, value in body.model_dump(exclude_unset=True).items():
        setattr(row, f"budget_{name}", value)


def session_budget(session: Session, row: WorkerSession) -> dict[str, Any]:
    worker = session.get(Worker, row.worker_id)
    assert worker is not None
    return budgets.session_view(session, worker, row)


# -- handlers ---------------------------------------------------------------------------------


async def get_worker_budget(request: Request) -> Response:
    name = request.path_params["name"]
    return JSONResponse(await db(lambda s: budgets.worker_view(s, Workers(s).get(name))))


async def put_worker_budget(request: Request) -> Response:
    name = request.path_params["name"]
    body = await parse_body(request, WorkerBudgetIn, settings().max_request_bytes)

    def put(session: Session) -> dict[str, Any]:
        worker = Workers(session).get(name)
        for field, value in body.model_dump(exclude_unset=True).items():
            setattr(worker, f"budget_{field}", value)
        session.flush()
        return budgets.worker_view(session, worker)

    return JSONResponse(await db(put))


async def put_session_budget(request: Request) -> Response:
    session_id = request.path_params["session_id"]
    body = await parse_body(request, SessionBudgetIn, settings().max_request_bytes)

    def put(session: Session) -> dict[str, Any]:
        row = Sessions(session).get(session_id)
        set_session_limits(row, body)
        session.flush()
        return session_budget(session, row)

    return JSONResponse(await db(put))


async def post_charge(request: Request) -> Response:
    """A session's meter charges one model call; the answer is the budget state right after."""
    session_id = request.path_params["session_id"]
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    expected = token_key().charge_token(session_id)
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        presented.strip().encode(), expected.encode()
    ):
        raise ApiError(
            401,
            "invalid_charge_token",
            "send this session's charge token as 'Authorization: Bearer …' (a job under a "
            "budget gets it in its start)",
        )
    charge = await parse_body(request, Charge, CHARGE_BODY_BYTES)
    state = await db(budgets.charge, session_id, charge)
    return JSONResponse(state.model_dump(mode="json"))


WORKER_ENDPOINTS = [
    Endpoint(
        "GET",
        "/v1/admin/workers/{name}/budget",
        get_worker_budget,
        "A worker's budget: limits, used (today in UTC, in total) and left",
        response=WorkerBudgetOut,
        tags=("admin",),
    ),
    Endpoint(
        "PUT",
        "/v1/admin/workers/{name}/budget",
        put_worker_budget,
        "Set a worker's budget (tokens and USD per UTC day and in total; null: no limit)",
        body=WorkerBudgetIn,
        response=WorkerBudgetOut,
        tags=("admin",),
    ),
]
SESSION_ENDPOINTS = [
    Endpoint(
        "PUT",
        "/v1/sessions/{session_id}/budget",
        put_session_budget,
        "Set a session's budget (tokens and USD; null: no limit)",
        body=SessionBudgetIn,
        response=SessionBudgetOut,
        tags=("sessions",),
    ),
    Endpoint(
        "POST",
        "/v1/sessions/{session_id}/charges",
        post_charge,
        "Charge a model call to the session's budget (its meter, with its charge token)",
        body=Charge,
        response=BudgetState,
        public=True,  # no API key: the session's charge token, checked by the handler
        tags=("sessions",),
    ),
]
