"""The harness's spans: one per job and one per model call, after the OpenTelemetry semantic
conventions for generative AI (docs/tracing.md).

Read from the job log as it is written, by wrapping the runner's observer (as `harness.metrics`
does), so a span says what the log says:

- ``job_started`` opens the job's span, ``invoke_agent {agent}`` (the worker's name, else the
  CLI's), as a child of the trace context the job was started in: the harness's server span of
  the request that started it, which continues the caller's ``traceparent``, or the context a
  prompt request's CloudEvent carried (`harness.prompt_requests`). Its W3C context is kept on
  the job (`Job.trace_context`), so every event the job publishes carries it.
- each ``model_call`` becomes a CLIENT span ``chat {model}``, a child of the job's, made after
  the call from the meter's `ModelCall` with the call's own start and end times: the meter's hot
  path does nothing for tracing.
- ``job_finished`` ends the job's span with the job's status, usage and error code. A job that
  never ran (refused: the session stayed busy, or its deadline passed) gets a span too, which
  starts and ends there.

No prompt, answer, tool input or provider message is recorded (the GenAI conventions' content
capture stays off); errors are recorded by their stable codes.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from pydantic import ValidationError

from eventing import tracing
from eventing.agent_events import EventKind, Usage
from eventing.job_events import JobEvent, JobEventKind
from eventing.model_calls import ModelCall

if TYPE_CHECKING:
    from harness.jobs import Job, JobObserver

logger = logging.getLogger(__name__)

TRACER = "vwm.harness"
# gen_ai.provider.name by the meter's wire API: the vendor whose API the CLI speaks (an
# OpenAI-compatible endpoint of another vendor is still "openai" on the wire).
PROVIDER_NAMES = {
    "anthropic": "anthropic",
    "openai_responses": "openai",
    "openai_chat": "openai",
    "gemini": "gcp.gemini",
}
INVOKE_AGENT = "invoke_agent"
CHAT = "chat"


def _ns(epoch_s: float) -> int:
    return int(epoch_s * 1_000_000_000)


def usage_attributes(usage: Usage) -> dict[str, int]:
    """Token counts as the conventions name them. ``gen_ai.usage.input_tokens`` is the whole
    prompt, cached tokens included (VWM's `Usage.input` is the uncached part only)."""
    attributes = {
        "gen_ai.usage.input_tokens": usage.input + usage.cache_read + usage.cache_write,
        "gen_ai.usage.output_tokens": usage.output,
        "gen_ai.usage.cache_read.input_tokens": usage.cache_read,
        "gen_ai.usage.cache_creation.input_tokens": usage.cache_write,
    }
    if usage.reasoning:
        attributes["gen_ai.usage.reasoning.output_tokens"] = usage.reasoning
    return attributes


def call_attributes(call: ModelCall, server: tuple[str, int] | None) -> dict[str, Any]:
    """The attributes of a model call's span."""
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": CHAT,
        "gen_ai.provider.name": PROVIDER_NAMES.get(call.api, call.api),
        **usage_attributes(call.usage),
        "vwm.model_call.seq": call.seq,
        "vwm.model_call.api": call.api,
        "vwm.model_call.outcome": call.outcome,
        "vwm.model_call.streamed": call.streamed,
    }
    if call.model:
        attributes["gen_ai.request.model"] = call.model
        if call.outcome == "ok":  # the meter read the answer: the model is the provider's
            attributes["gen_ai.response.model"] = call.model
    if call.status is not None:
        attributes["http.response.status_code"] = call.status
    if call.ttft_ms is not None:
        attributes["vwm.model_call.ttft_ms"] = call.ttft_ms
    if server is not None:
        attributes["server.address"], attributes["server.port"] = server
    if call.outcome != "ok":
        # An HTTP error by its status, as the HTTP conventions do; otherwise how the call ended.
        attributes["error.type"] = (
            str(call.status) if call.outcome == "http_error" else call.outcome
        )
    return attributes


class JobTracing:
    """A `harness.jobs.JobObserver` that traces what the log says (see the module), then hands
    every entry on to the observer it wraps. Never raises, as an observer must not.

    `agent`: the worker's name (``gen_ai.agent.name``); `session_id`: the conversation;
    `api`: the wire API the CLI speaks (its provider's name); `server`: the model provider's
    host and port when the session names one."""

    def __init__(
        self,
        inner: JobObserver | None,
        *,
        agent: str,
        session_id: str,
        cli: str,
        api: str,
        server: tuple[str, int] | None = None,
    ) -> None:
        self.inner = inner
        self._agent = agent
        self._session_id = session_id
        self._cli = cli
        self._provider = PROVIDER_NAMES.get(api, api)
        self._server = server
        self._spans: dict[str, trace.Span] = {}

    def on_log(self, job: Job, entry: JobEvent) -> None:
        try:
            if entry.kind == JobEventKind.JOB_STARTED:
                self._started(job, entry)
            elif entry.kind == EventKind.MODEL_CALL:
                self._called(job, entry)
            elif entry.kind == JobEventKind.JOB_FINISHED:
                self._finished(job, entry)
        except Exception:  # tracing must never cost a job anything
            logger.exception("could not trace a job log entry", extra={"job_id": job.id})
        if self.inner is not None:
            self.inner.on_log(job, entry)

    def on_finished(self, job: Job) -> None:
        if self.inner is not None:
            self.inner.on_finished(job)

    # -- the spans ------------------------------------------------------------------------------

    def _open(self, job: Job, at: float, model: Any) -> trace.Span:
        """The job's span, a child of the context the job was started in (current here: the
        job's task copied it from whoever started it)."""
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": INVOKE_AGENT,
            "gen_ai.agent.name": self._agent,
            "gen_ai.provider.name": self._provider,
            "gen_ai.conversation.id": self._session_id,
            "vwm.job.id": job.id,
            "vwm.cli": self._cli,
        }
        if isinstance(model, str) and model:
            attributes["gen_ai.request.model"] = model
        if job.causation_id:
            attributes["vwm.job.causation_id"] = job.causation_id
        span = tracing.tracer(TRACER).start_span(
            f"{INVOKE_AGENT} {self._agent}",
            kind=SpanKind.INTERNAL,
            attributes=attributes,
            start_time=_ns(at),
        )
        self._spans[job.id] = span
        job.trace_context = tracing.event_trace(trace.set_span_in_context(span)) or None
        return span

    def _started(self, job: Job, entry: JobEvent) -> None:
        self._open(job, entry.ts, entry.data.get("model"))

    def _called(self, job: Job, entry: JobEvent) -> None:
        parent = self._spans.get(job.id)
        if parent is None or not parent.is_recording():
            return  # tracing off (or not sampled): not even the record is read
        try:
            call = ModelCall.model_validate(entry.data)
        except ValidationError:
            return
        start = _ns(call.started_at)
        attributes = call_attributes(call, self._server)
        span = tracing.tracer(TRACER).start_span(
            f"{CHAT} {call.model}" if call.model else CHAT,
            context=trace.set_span_in_context(parent),
            kind=SpanKind.CLIENT,
            attributes=attributes,
            start_time=start,
        )
        if call.outcome != "ok":
            span.set_status(Status(StatusCode.ERROR, call.outcome))
        span.end(end_time=start + int(call.latency_ms * 1_000_000))

    def _finished(self, job: Job, entry: JobEvent) -> None:
        span = self._spans.pop(job.id, None)
        if span is None:  # refused before it ran: its span starts and ends here
            span = self._open(job, entry.ts, None)
            self._spans.pop(job.id, None)
        data = entry.data
        status = str(data.get("status") or "unknown")
        span.set_attribute("vwm.job.status", status)
        summary = data.get("summary")
        if isinstance(summary, dict) and span.is_recording():
            if isinstance(model := summary.get("model"), str) and model:
                span.set_attribute("gen_ai.response.model", model)
            with contextlib.suppress(TypeError, ValidationError):
                span.set_attributes(usage_attributes(Usage(**(summary.get("usage") or {}))))
        if status != "succeeded":
            error = data.get("error")
            code = error.get("code") if isinstance(error, dict) else None
            span.set_attribute("error.type", str(code or status))
            span.set_status(Status(StatusCode.ERROR, str(code or status)))
        span.end(end_time=_ns(entry.ts))
