"""Budgets, the control plane's side: what a session may still spend, and the charges that count.

A worker may limit the billed tokens and USD of all its sessions per UTC day and in total; a
session may limit its own. Each job of a session under any of them starts with a
`eventing.budgets.JobBudget` (`job_budget`), and its meter charges every model call to
`POST /v1/sessions/{id}/charges` (`charge`), getting back the `BudgetState`. A job whose
budget is already spent never starts (`BudgetExceeded`).

A charge is one transaction that locks the worker's row first, so the charges of one worker
are counted one after another: each answer includes every charge committed before it, from any
session of the worker. A session therefore overspends by at most the one call it had in flight
when the budget closed (docs/budgets.md). Used by `functions.budgets_api` (the endpoints),
`functions.job_dispatch` and `functions.prompt_delivery` (the gate before a job).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from eventing.budgets import BUDGET_EXCEEDED, BudgetState, Charge, JobBudget, billed_tokens
from functions.context import settings, token_key
from functions.db.budgets import BudgetCharges, Spent
from functions.db.errors import NotFoundError
from functions.db.models import Job, Worker, WorkerSession
from functions.errors import FunctionsError

BUDGET_UNENFORCEABLE = "budget_unenforceable"


class BudgetRefusal(FunctionsError):
    """A job that may not start because of a budget; its message says what to do."""


class BudgetExceeded(BudgetRefusal):
    code = BUDGET_EXCEEDED
    status = 402
    retryable = False  # not until someone raises the budget (or the UTC day turns)


class BudgetUnenforceable(BudgetRefusal):
    code = BUDGET_UNENFORCEABLE
    status = 503
    retryable = False  # not until the control plane is configured


def day_start(now: datetime) -> datetime:
    """Midnight UTC of `now`'s day: where the per-day budgets start counting again."""
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def applies(worker: Worker, row: WorkerSession) -> bool:
    """Whether any budget limits the session: only then does a job carry one."""
    limits = (
        worker.budget_tokens_per_day,
        worker.budget_tokens_total,
        worker.budget_usd_per_day,
        worker.budget_usd_total,
        row.budget_tokens,
        row.budget_usd,
    )
    return any(limit is not None for limit in limits)


@dataclass(frozen=True)
class _Limit:
    tokens: bool  # else USD
    limit: float
    used: float
    what: str  # "worker w's daily token budget (1000)"
    raise_with: str  # "PUT /v1/admin/workers/w/budget"

    @property
    def left(self) -> float:
        return max(self.limit - self.used, 0)


def _amount(tokens: bool, value: float) -> str:
    return f"{int(value)}" if tokens else f"${value:g}"


def _limits(worker: Worker, row: WorkerSession, spent: Spent) -> list[_Limit]:
    on_worker = f"PUT /v1/admin/workers/{worker.name}/budget"
    on_session = f"PUT /v1/sessions/{row.id}/budget"
    candidates = (
        (True, worker.budget_tokens_per_day, spent.worker_tokens_today, "daily token", on_worker),
        (True, worker.budget_tokens_total, spent.worker_tokens_total, "total token", on_worker),
        (False, worker.budget_usd_per_day, spent.worker_usd_today, "daily USD", on_worker),
        (False, worker.budget_usd_total, spent.worker_usd_total, "total USD", on_worker),
        (True, row.budget_tokens, spent.session_tokens, "token", on_session),
        (False, row.budget_usd, spent.session_usd, "USD", on_session),
    )
    found = []
    for tokens, limit, used, kind, raise_with in candidates:
        if limit is None:
            continue
        owner = f"worker {worker.name}'s" if raise_with == on_worker else f"session {row.id}'s"
        what = f"{owner} {kind} budget ({_amount(tokens, limit)})"
        found.append(_Limit(tokens, limit, used, what, raise_with))
    return found


def state_of(worker: Worker, row: WorkerSession, spent: Spent) -> BudgetState:
    """Closed when any budget over the session is spent; what is left is the least left."""
    limits = _limits(worker, row, spent)
    spent_out = next((limit for limit in limits if limit.used >= limit.limit), None)
    token_lefts = [int(limit.left) for limit in limits if limit.tokens]
    usd_lefts = [limit.left for limit in limits if not limit.tokens]
    reason = None
    if spent_out is not None:
        reason = f"{spent_out.what} is spent: raise it with {spent_out.raise_with}"
        if "daily" in spent_out.what:
            reason += ", or wait for the next UTC day"
    return BudgetState(
        open=spent_out is None,
        reason=reason,
        tokens_left=min(token_lefts) if token_lefts else None,
        usd_left=round(min(usd_lefts), 9) if usd_lefts else None,
    )


def spent_by(session: Session, worker: Worker, row: WorkerSession, now: datetime) -> Spent:
    return BudgetCharges(session).spent(worker.id, row.id, day_start(now))


def current_state(session: Session, worker: Worker, row: WorkerSession) -> BudgetState:
    return state_of(worker, row, spent_by(session, worker, row, datetime.now(UTC)))


def charge(session: Session, session_id: str, charge: Charge) -> BudgetState:
    """Count a charge of `session_id`'s meter, once per (job_id, seq), and answer the state
    right after it. The worker's row is locked first: the charges of its sessions are counted
    one after another, each seeing all committed before it."""
    row = session.get(WorkerSession, session_id)
    if row is None:
        raise NotFoundError("session", session_id)
    job = session.get(Job, charge.job_id)
    if job is None or job.session_id != session_id:
        raise ChargeRefused(
            f"job {charge.job_id!r} is not a job of session {session_id}; a meter charges "
            "only the jobs of its own session"
        )
    worker = session.get(Worker, row.worker_id, with_for_update=True)
    assert worker is not None  # a session's worker cannot be deleted while it has sessions
    now = datetime.now(UTC)
    BudgetCharges(session).add(
        job_id=charge.job_id,
        seq=charge.seq,
        session_id=session_id,
        worker_id=worker.id,
        tokens=billed_tokens(charge.usage),
        usd=charge.usd,
        charged_at=now,
    )
    return state_of(worker, row, spent_by(session, worker, row, now))


class ChargeRefused(FunctionsError):
    code = "charge_invalid"
    status = 422
    retryable = False


def charge_url(session_id: str) -> str:
    """Where `session_id`'s meter charges, as the harness reaches the control plane."""
    base = settings().harness_control_url
    if not base:
        raise BudgetUnenforceable(
            "a budget applies to this session, but the control plane does not know the URL its "
            "harnesses reach it at, so no model call could be counted: set "
            "VWM_HARNESS_CONTROL_URL (docs/budgets.md), or remove the budget"
        )
    return f"{base.rstrip('/')}/v1/sessions/{session_id}/charges"


def job_budget(session: Session, session_id: str) -> JobBudget | None:
    """What a job of the session starts with: None without a budget (the job start is as
    before); raises `BudgetExceeded` when one is spent and `BudgetUnenforceable` when no
    charge could reach the control plane."""
    row = session.get(WorkerSession, session_id)
    if row is None:
        raise NotFoundError("session", session_id)
    worker = session.get(Worker, row.worker_id)
    assert worker is not None
    if not applies(worker, row):
        return None
    state = current_state(session, worker, row)
    if not state.open:
        raise BudgetExceeded(state.reason or "the budget is spent", session_id=session_id)
    return JobBudget(
        charge_url=charge_url(session_id), charge_token=token_key().charge_token(session_id)
    )


# -- what the API shows -----------------------------------------------------------------------


def _left(limit: float | None, used: float) -> float | None:
    return None if limit is None else max(limit - used, 0)


def worker_view(session: Session, worker: Worker) -> dict[str, Any]:
    """A worker's limits, what its sessions used (today in UTC, in total) and what is left."""
    spent = BudgetCharges(session).spent(worker.id, None, day_start(datetime.now(UTC)))
    return {
        "limits": {
            "tokens_per_day": worker.budget_tokens_per_day,
            "tokens_total": worker.budget_tokens_total,
            "usd_per_day": worker.budget_usd_per_day,
            "usd_total": worker.budget_usd_total,
        },
        "used": {
            "tokens_today": spent.worker_tokens_today,
            "tokens_total": spent.worker_tokens_total,
            "usd_today": spent.worker_usd_today,
            "usd_total": spent.worker_usd_total,
        },
        "left": {
            "tokens_today": _left(worker.budget_tokens_per_day, spent.worker_tokens_today),
            "tokens_total": _left(worker.budget_tokens_total, spent.worker_tokens_total),
            "usd_today": _left(worker.budget_usd_per_day, spent.worker_usd_today),
            "usd_total": _left(worker.budget_usd_total, spent.worker_usd_total),
        },
    }


def session_view(session: Session, worker: Worker, row: WorkerSession) -> dict[str, Any]:
    """A session's own limits, used and left, and `state`: what its meter would be told now,
    with its worker's budgets too."""
    spent = spent_by(session, worker, row, datetime.now(UTC))
    return {
        "limits": {"tokens": row.budget_tokens, "usd": row.budget_usd},
        "used": {"tokens": spent.session_tokens, "usd": spent.session_usd},
        "left": {
            "tokens": _left(row.budget_tokens, spent.session_tokens),
            "usd": _left(row.budget_usd, spent.session_usd),
        },
        "state": state_of(worker, row, spent).model_dump(mode="json"),
    }
