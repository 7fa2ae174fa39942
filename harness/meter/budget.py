"""A job's budget as the meter enforces it: a gate before each call, a charge after it.

The control plane keeps the budgets and the money; the harness only reports each call's cost
(`eventing.budgets.Charge`) and obeys the state it gets back. Charges go out one at a time, in
order, and the gate waits for the one in flight: a call is let through only when the last
answer said open, so the session overspends by at most one call when the budget closes (other
sessions of the worker may be spending it meanwhile). A control plane that cannot be reached
closes the gate too: spending that nobody can count is not allowed.
"""

from __future__ import annotations

import asyncio
import logging

import httpx

from eventing.agent_events import Usage
from eventing.budgets import BudgetState, Charge, JobBudget
from eventing.model_calls import ModelCall
from harness.adapters.base import Prices, estimate_cost

logger = logging.getLogger(__name__)

CHARGE_ATTEMPTS = 3
CHARGE_BACKOFF_S = 0.2


class BudgetGuard:
    def __init__(
        self,
        job_id: str,
        budget: JobBudget,
        client: httpx.AsyncClient,
        prices: Prices | None,
        *,
        timeout_s: float = 10.0,
    ) -> None:
        self._job_id = job_id
        self._budget = budget
        self._client = client
        self._prices = prices
        self._timeout_s = timeout_s
        self._closed_because: str | None = None
        self._last: asyncio.Task[None] | None = None

    async def admit(self) -> str | None:
        """None when the next call may go; else why not (the budget that is spent)."""
        if self._last is not None:
            await asyncio.shield(self._last)
        return self._closed_because

    def charge(self, call: ModelCall) -> None:
        """Report a finished call (in order after the previous report)."""
        usd = estimate_cost(call.usage, self._prices) if self._prices is not None else 0.0
        self._queue(Charge(job_id=self._job_id, seq=call.seq, usage=call.usage, usd=usd))

    async def settle(self, reported_usd: float | None) -> None:
        """At the job's end: charge the CLI's reported cost when no prices priced the calls,
        and wait until every charge is in."""
        if self._prices is None and reported_usd:
            self._queue(Charge(job_id=self._job_id, seq=0, usage=Usage(), usd=reported_usd))
        if self._last is not None:
            await asyncio.shield(self._last)

    def _queue(self, charge: Charge) -> None:
        previous = self._last
        self._last = asyncio.create_task(self._send_after(previous, charge), name="budget-charge")

    async def _send_after(self, previous: asyncio.Task[None] | None, charge: Charge) -> None:
        if previous is not None:
            await asyncio.gather(previous, return_exceptions=True)
        state = await self._send(charge)
        if state is None:
            self._closed_because = (
                "the control plane could not be reached to count this session's spending, so "
                "no further model call is allowed; send the prompt again"
            )
        elif not state.open:
            self._closed_because = state.reason or "the budget is spent; raise it to go on"

    async def _send(self, charge: Charge) -> BudgetState | None:
        headers = {"authorization": f"Bearer {self._budget.charge_token}"}
        for attempt in range(CHARGE_ATTEMPTS):
            try:
                answer = await self._client.post(
                    self._budget.charge_url,
                    json=charge.model_dump(mode="json"),
                    headers=headers,
                    timeout=self._timeout_s,
                )
                if answer.status_code < 400:
                    return BudgetState.model_validate(answer.json())
                reason = f"HTTP {answer.status_code}: {answer.text[:200]}"
                if answer.status_code < 500:  # refused, not down: asking again changes nothing
                    logger.error(
                        "the control plane refused a budget charge",
                        extra={"job_id": self._job_id, "seq": charge.seq, "reason": reason},
                    )
                    return None
            except (httpx.HTTPError, ValueError) as exc:
                reason = str(exc) or type(exc).__name__
            logger.warning(
                "could not charge a model call to the budget",
                extra={
                    "job_id": self._job_id,
                    "seq": charge.seq,
                    "attempt": attempt + 1,
                    "reason": reason,
                },
            )
            await asyncio.sleep(CHARGE_BACKOFF_S * 2**attempt)
        return None
