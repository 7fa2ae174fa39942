"""Budgets on the wire between the control plane, which keeps them, and the harness, whose
meter enforces them before each model call.

A job of a session under a budget (its own, or its worker's per day or in total) starts with a
`JobBudget`: where the meter reports each call's cost (`charge_url`) and the token that says the
report is this session's. The meter posts a `Charge` after each call and gets the `BudgetState`
back; once it says closed, the meter refuses the next call in the CLI's own API shape and the job
ends `budget_exceeded`. A session therefore overspends by at most the one call in flight when
the budget closed, however many sessions share the worker's budget.

Tokens are billed tokens: input, cache read, cache write and output (reasoning is part of
output). USD is the call's cost at the runtime's prices; without prices a call costs no USD,
and the CLI's own reported cost is charged when its job ends (`Charge.seq` 0).
"""

from __future__ import annotations

from pydantic import ConfigDict, Field

from eventing.agent_events import Usage
from eventing.lazy_models import LazyModel

BUDGET_EXCEEDED = "budget_exceeded"


class JobBudget(LazyModel):
    """In a job's start: the meter charges each call there (`POST`, ``Authorization: Bearer``
    `charge_token`)."""

    model_config = ConfigDict(extra="forbid")

    charge_url: str = Field(min_length=1, max_length=2000)
    charge_token: str = Field(min_length=1, max_length=200, repr=False)


class Charge(LazyModel):
    model_config = ConfigDict(extra="forbid")

    job_id: str = Field(min_length=1, max_length=64)
    seq: int = Field(ge=0)
    """The call's `ModelCall.seq`; 0 for the CLI's reported cost, charged at the job's end."""
    usage: Usage = Field(default_factory=Usage)
    usd: float = Field(default=0.0, ge=0)


def billed_tokens(usage: Usage) -> int:
    """The tokens a budget counts: the whole prompt and the whole output."""
    return usage.input + usage.cache_read + usage.cache_write + usage.output


class BudgetState(LazyModel):
    """What is left for a session: closed when any budget over it is spent."""

    model_config = ConfigDict(extra="ignore")

    open: bool
    reason: str | None = None
    """Which budget is spent and how to raise it, when closed."""
    tokens_left: int | None = None
    """The least left of the token budgets over the session; None: none applies."""
    usd_left: float | None = None
