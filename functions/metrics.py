"""The control plane's own counters and histograms (docs/metrics.md); the HTTP ones are
`eventing.http_metrics`, the gauges read at each scrape `functions.metrics_scrape`.

Module globals in prometheus_client's default registry, moved where the event happens: a job's
end and its tokens where its telemetry row is written (once the transaction commits: a
rolled-back write counts nothing), a harness relaunch in the runtime backend, a broker retry or
dead delivery. It imports nothing of the control plane, so any layer may count here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import Counter, Histogram
from sqlalchemy import event
from sqlalchemy.orm import Session

# Usage fields that add up to every token billed; `reasoning` is a part of `output`.
TOKEN_KINDS = ("input", "cache_read", "cache_write", "output")
UNKNOWN = "unknown"  # a label whose value the record does not say

JOB_DURATION = Histogram(
    "vwm_job_duration_seconds",
    "A finished job's run time (as its harness measured it), by final status.",
    ["status"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, float("inf")),
)
TOKENS = Counter(
    "vwm_tokens_total",
    "Tokens of finished jobs, by worker, model and kind (input, cache_read, cache_write, output: "
    "they add up to the whole).",
    ["worker", "model", "kind"],
)
COST = Counter(
    "vwm_cost_usd_total",
    "Cost of finished jobs in US dollars, by worker and model.",
    ["worker", "model"],
)
HARNESS_RESTARTS = Counter(
    "vwm_harness_restarts_total",
    "Harnesses the runtime backend started again for a live session (dead, stopped, or mute).",
)
HARNESS_STARTS = Counter(
    "vwm_harness_starts_total",
    "Harnesses the runtime backend started for a session, by start: warm (a warm pool member "
    "claimed) or cold. Many cold starts with a pool set: the pool is too small.",
    ["start"],
)
DELIVERY_RETRIES = Counter(
    "vwm_broker_delivery_retries_total",
    "Embedded broker deliveries that failed and were scheduled again.",
)
DEAD_LETTERS = Counter(
    "vwm_broker_dead_letters_total",
    "Embedded broker deliveries given up (retries spent, refused, or subscription gone).",
)


def after_commit(session: Session, observe: Callable[[], None]) -> None:
    """Run `observe` once `session`'s transaction commits (never if it rolls back)."""
    event.listen(session, "after_commit", lambda _: observe(), once=True)


def observe_job_end(
    session: Session,
    *,
    status: str,
    duration_ms: int | None,
    worker: str | None,
    model: str | None,
    usage: dict[str, Any],
    cost_usd: float | None,
) -> None:
    """A job's end as its telemetry row records it, counted when the row is committed."""
    worker_label, model_label = worker or UNKNOWN, model or UNKNOWN

    def observe() -> None:
        if duration_ms is not None:
            JOB_DURATION.labels(status).observe(duration_ms / 1000)
        for kind in TOKEN_KINDS:
            if tokens := usage.get(kind):
                TOKENS.labels(worker_label, model_label, kind).inc(tokens)
        if cost_usd:
            COST.labels(worker_label, model_label).inc(cost_usd)

    after_commit(session, observe)
