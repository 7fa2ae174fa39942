"""Which job a model call belongs to, and what the job hears of its calls.

The job runner opens a `JobCalls` when a job starts and closes it when the job ends (one job at
a time per session, so the open one is the job of every call the meter sees meanwhile). The meter
reports each finished call to it, and stops the job when the provider cannot be used: the runner
learns why from `stop_reason` and ends the job with that code, whatever the CLI would have done
(a retry loop, a long reconnect).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from eventing.budgets import BUDGET_EXCEEDED
from eventing.model_calls import ModelCall

if TYPE_CHECKING:  # its HTTP client is the meter's to load, not the job runner's
    from harness.meter.budget import BudgetGuard

logger = logging.getLogger(__name__)

PROVIDER_UNREACHABLE = "provider_unreachable"
PROVIDER_AUTH_FAILED = "provider_auth_failed"
__all__ = [
    "BUDGET_EXCEEDED",
    "PROVIDER_AUTH_FAILED",
    "PROVIDER_UNREACHABLE",
    "CallLedger",
    "JobCalls",
]


@dataclass
class JobCalls:
    job_id: str
    on_call: Callable[[ModelCall], None]
    """Told of each call as it finishes (the runner appends it to the job's log)."""
    on_stop: Callable[[], None]
    """Asked to stop the job now (the runner cancels its task)."""
    budget: BudgetGuard | None = None
    """Set when a budget applies to the job: each call is charged to it."""
    calls: list[ModelCall] = field(default_factory=list)
    stop_reason: dict[str, Any] | None = None

    def next_seq(self) -> int:
        return len(self.calls) + 1

    def add(self, call: ModelCall) -> None:
        self.calls.append(call)
        if self.budget is not None and call.outcome != "refused":
            self.budget.charge(call)
        try:
            self.on_call(call)
        except Exception:  # the record is kept; only the live report failed
            logger.exception("could not report a model call", extra={"job_id": self.job_id})

    def stop(self, code: str, message: str) -> None:
        """End the job with `code`; the first reason wins (the others follow from it)."""
        if self.stop_reason is not None:
            return
        self.stop_reason = {"code": code, "message": message}
        logger.warning(
            "stopping a job: the model provider cannot be used",
            extra={"job_id": self.job_id, "code": code},
        )
        self.on_stop()


class CallLedger:
    """The open job, if any. Calls outside a job (a process the CLI left running) are metered
    and logged, but belong to no job."""

    def __init__(self) -> None:
        self._open: JobCalls | None = None

    @property
    def current(self) -> JobCalls | None:
        return self._open

    def open(
        self,
        job_id: str,
        *,
        on_call: Callable[[ModelCall], None],
        on_stop: Callable[[], None],
        budget: BudgetGuard | None = None,
    ) -> JobCalls:
        self._open = JobCalls(job_id, on_call, on_stop, budget=budget)
        return self._open

    def close(self, calls: JobCalls) -> None:
        if self._open is calls:
            self._open = None
