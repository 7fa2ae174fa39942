"""The harness's own metrics: its jobs and the model calls its meter measured (docs/metrics.md).

Read from the job log as it is written, by wrapping the runner's observer (`JobMetrics`): every
metered call is logged as a ``model_call`` entry and every job's end as ``job_finished``, so
the metrics count exactly what the log (and the control plane) records.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Histogram
from pydantic import ValidationError

from eventing.agent_events import EventKind
from eventing.job_events import JobEvent, JobEventKind
from eventing.model_calls import ModelCall

if TYPE_CHECKING:
    from harness.jobs import Job, JobObserver

# Usage fields that add up to every token billed; `reasoning` is a part of `output`.
TOKEN_KINDS = ("input", "cache_read", "cache_write", "output")
UNKNOWN = "unknown"  # a label whose value the log does not say

JOBS_FINISHED = Counter(
    "vwm_harness_jobs_finished_total", "Jobs this harness ended, by final status.", ["status"]
)
JOB_DURATION = Histogram(
    "vwm_harness_job_duration_seconds",
    "A job's run time as the harness measured it, by final status.",
    ["status"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, float("inf")),
)
MODEL_CALLS = Counter(
    "vwm_harness_model_calls_total",
    "Model calls the meter saw end, by wire API, model and outcome.",
    ["api", "model", "outcome"],
)
MODEL_TOKENS = Counter(
    "vwm_harness_model_tokens_total",
    "Tokens of metered model calls, by wire API, model and kind (input, cache_read, "
    "cache_write, output: they add up to the whole).",
    ["api", "model", "kind"],
)
MODEL_CALL_DURATION = Histogram(
    "vwm_harness_model_call_duration_seconds",
    "A model call's latency, request start to the answer's last byte, by wire API and model.",
    ["api", "model"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, float("inf")),
)


def observe_call(call: ModelCall) -> None:
    model = call.model or UNKNOWN
    MODEL_CALLS.labels(call.api, model, call.outcome).inc()
    MODEL_CALL_DURATION.labels(call.api, model).observe(call.latency_ms / 1000)
    for kind in TOKEN_KINDS:
        if tokens := getattr(call.usage, kind):
            MODEL_TOKENS.labels(call.api, model, kind).inc(tokens)


def observe_finished(data: dict[str, Any]) -> None:
    status = str(data.get("status") or UNKNOWN)
    JOBS_FINISHED.labels(status).inc()
    if isinstance(duration_ms := data.get("duration_ms"), int | float):
        JOB_DURATION.labels(status).observe(duration_ms / 1000)


class JobMetrics:
    """A `harness.jobs.JobObserver` that counts what the log says, then hands every entry on to
    the observer it wraps (publishing, when on). Never raises, as an observer must not."""

    def __init__(self, inner: JobObserver | None) -> None:
        self.inner = inner

    def on_log(self, job: Job, entry: JobEvent) -> None:
        try:
            if entry.kind == EventKind.MODEL_CALL:
                observe_call(ModelCall.model_validate(entry.data))
            elif entry.kind == JobEventKind.JOB_FINISHED:
                observe_finished(entry.data)
        except ValidationError:  # a call the log could not describe is not counted
            pass
        if self.inner is not None:
            self.inner.on_log(job, entry)

    def on_finished(self, job: Job) -> None:
        if self.inner is not None:
            self.inner.on_finished(job)
