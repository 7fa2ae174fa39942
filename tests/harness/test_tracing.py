"""`harness.tracing.JobTracing`: the job's span and its model calls' spans, from the job log as
the runner writes it (the end-to-end run is tests/e2e/test_tracing.py)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from eventing import tracing
from eventing.agent_events import EventKind, RunSummary, Usage
from eventing.job_events import JobEvent, JobEventKind
from eventing.model_calls import ModelCall
from harness.publishing import finished_event
from harness.tracing import JobTracing

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
SPAN_ID = "b7ad6b7169203331"
STARTED = 1_700_000_000.0


class Recorder:
    """The observer JobTracing wraps: what it was handed on."""

    def __init__(self) -> None:
        self.entries: list[str] = []
        self.finished: list[str] = []

    def on_log(self, job: Any, entry: JobEvent) -> None:
        self.entries.append(entry.kind)

    def on_finished(self, job: Any) -> None:
        self.finished.append(job.id)


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with tracing.use_provider(provider):
        yield exporter
    provider.shutdown()


def observer(inner: Recorder | None = None) -> JobTracing:
    return JobTracing(
        inner,
        agent="reviewer",
        session_id="s-1",
        cli="claude",
        api="anthropic",
        server=("provider.example", 443),
    )


def new_job(job_id: str = "job_1", causation_id: str | None = None) -> Any:
    return SimpleNamespace(id=job_id, causation_id=causation_id, trace_context=None)


def entry(job: Any, seq: int, kind: str, data: dict[str, Any], ts: float) -> JobEvent:
    return JobEvent(job_id=job.id, seq=seq, kind=kind, data=data, ts=ts)


def call(seq: int, **changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "seq": seq,
        "api": "anthropic",
        "model": "claude-sonnet-4-5",
        "streamed": True,
        "status": 200,
        "outcome": "ok",
        "usage": Usage(input=100, cache_read=50, cache_write=25, output=40, reasoning=10),
        "complete": True,
        "started_at": STARTED + seq,
        "latency_ms": 250.5,
        "ttft_ms": 80.0,
        **changes,
    }
    return ModelCall(**fields).model_dump(mode="json")


def finished(status: str, error: dict[str, Any] | None = None) -> dict[str, Any]:
    summary = RunSummary(usage=Usage(input=100, output=40), model="claude-sonnet-4-5")
    return {"status": status, "summary": summary.model_dump(), "error": error}


def run_job(tracer: JobTracing, job: Any, calls: list[dict[str, Any]], end: dict[str, Any]) -> None:
    tracer.on_log(job, entry(job, 1, JobEventKind.JOB_STARTED, {"model": "sonnet"}, STARTED))
    for n, data in enumerate(calls, start=2):
        tracer.on_log(job, entry(job, n, EventKind.MODEL_CALL, data, STARTED + n))
    tracer.on_log(job, entry(job, len(calls) + 2, JobEventKind.JOB_FINISHED, end, STARTED + 10))
    tracer.on_finished(job)


def test_a_job_is_a_span_whose_model_calls_are_its_children(spans):
    inner = Recorder()
    job = new_job(causation_id="request-1")
    remote = trace.SpanContext(
        int(TRACE_ID, 16), int(SPAN_ID, 16), is_remote=True, trace_flags=trace.TraceFlags(1)
    )
    with trace.use_span(trace.NonRecordingSpan(remote)):  # the context the job started in
        run_job(observer(inner), job, [call(1), call(2)], finished("succeeded"))

    *chats, agent = spans.get_finished_spans()
    assert agent.name == "invoke_agent reviewer"
    assert agent.kind is SpanKind.INTERNAL
    assert f"{agent.context.trace_id:032x}" == TRACE_ID
    assert agent.parent is not None and f"{agent.parent.span_id:016x}" == SPAN_ID
    assert dict(agent.attributes) == {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": "reviewer",
        "gen_ai.provider.name": "anthropic",
        "gen_ai.conversation.id": "s-1",
        "gen_ai.request.model": "sonnet",
        "gen_ai.response.model": "claude-sonnet-4-5",
        "gen_ai.usage.input_tokens": 100,
        "gen_ai.usage.output_tokens": 40,
        "gen_ai.usage.cache_read.input_tokens": 0,
        "gen_ai.usage.cache_creation.input_tokens": 0,
        "vwm.job.id": "job_1",
        "vwm.job.causation_id": "request-1",
        "vwm.job.status": "succeeded",
        "vwm.cli": "claude",
    }
    assert (agent.start_time, agent.end_time) == (int(STARTED * 1e9), int((STARTED + 10) * 1e9))
    assert agent.status.status_code is StatusCode.UNSET

    assert [span.name for span in chats] == ["chat claude-sonnet-4-5"] * 2
    first = chats[0]
    assert first.kind is SpanKind.CLIENT
    assert first.parent is not None and first.parent.span_id == agent.context.span_id
    assert first.start_time == int((STARTED + 1) * 1e9)
    assert first.end_time - first.start_time == 250_500_000  # the call's latency
    assert dict(first.attributes) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "anthropic",
        "gen_ai.request.model": "claude-sonnet-4-5",
        "gen_ai.response.model": "claude-sonnet-4-5",
        "gen_ai.usage.input_tokens": 175,  # the whole prompt: cached tokens included
        "gen_ai.usage.output_tokens": 40,
        "gen_ai.usage.cache_read.input_tokens": 50,
        "gen_ai.usage.cache_creation.input_tokens": 25,
        "gen_ai.usage.reasoning.output_tokens": 10,
        "http.response.status_code": 200,
        "server.address": "provider.example",
        "server.port": 443,
        "vwm.model_call.seq": 1,
        "vwm.model_call.api": "anthropic",
        "vwm.model_call.outcome": "ok",
        "vwm.model_call.streamed": True,
        "vwm.model_call.ttft_ms": 80.0,
    }

    # The job carries its span's context for its events, and the wrapped observer got it all.
    assert job.trace_context == {
        "traceparent": f"00-{TRACE_ID}-{agent.context.span_id:016x}-{agent.context.trace_flags:02x}"
    }
    assert inner.entries == ["job_started", "model_call", "model_call", "job_finished"]
    assert inner.finished == ["job_1"]


@pytest.mark.parametrize(
    ("changes", "error_type"),
    [
        ({"status": 429, "outcome": "http_error", "complete": False}, "429"),
        ({"status": None, "outcome": "unreachable", "complete": False}, "unreachable"),
        ({"outcome": "incomplete", "complete": False}, "incomplete"),
    ],
)
def test_a_failed_call_says_how_and_never_what_the_provider_wrote(spans, changes, error_type):
    failed = call(1, error="quota exceeded for key sk-secret", **changes)
    run_job(observer(), new_job(), [failed], finished("succeeded"))
    chat = spans.get_finished_spans()[0]
    assert chat.attributes["error.type"] == error_type
    assert "gen_ai.response.model" not in chat.attributes
    assert chat.status.status_code is StatusCode.ERROR
    assert all("sk-secret" not in str(value) for value in chat.attributes.values())
    assert "sk-secret" not in (chat.status.description or "")


def test_a_failed_job_carries_its_error_code(spans):
    error = {"code": "provider_auth_failed", "message": "the provider refused the key sk-x"}
    run_job(observer(), new_job(), [], finished("failed", error))
    (agent,) = spans.get_finished_spans()
    assert agent.attributes["error.type"] == "provider_auth_failed"
    assert agent.attributes["vwm.job.status"] == "failed"
    assert agent.status.status_code is StatusCode.ERROR
    assert all("sk-x" not in str(value) for value in agent.attributes.values())


def test_a_job_refused_before_it_ran_still_has_its_span(spans):
    job = new_job()
    error = {"code": "session_busy", "message": "the session was busy"}
    observer().on_log(job, entry(job, 1, JobEventKind.JOB_FINISHED, finished("failed", error), 5.0))
    (agent,) = spans.get_finished_spans()
    assert agent.name == "invoke_agent reviewer"
    assert agent.start_time == agent.end_time == 5_000_000_000
    assert agent.attributes["error.type"] == "session_busy"


def test_with_tracing_off_nothing_is_recorded_but_the_callers_context_goes_on(spans):
    job = new_job()
    remote = trace.SpanContext(int(TRACE_ID, 16), int(SPAN_ID, 16), is_remote=True)
    with tracing.use_provider(None), trace.use_span(trace.NonRecordingSpan(remote)):
        # A call record that does not even validate: with tracing off it is never read.
        run_job(observer(), job, [{"not": "a call"}], finished("succeeded"))
    assert spans.get_finished_spans() == ()
    assert job.trace_context == {"traceparent": f"00-{TRACE_ID}-{SPAN_ID}-00"}

    untraced = new_job("job_2")
    with tracing.use_provider(None):
        run_job(observer(), untraced, [call(1)], finished("succeeded"))
    assert untraced.trace_context is None


def test_the_jobs_events_carry_its_trace_context():
    job = SimpleNamespace(
        id="job_1",
        causation_id=None,
        trace_context={"traceparent": f"00-{TRACE_ID}-{SPAN_ID}-01", "tracestate": "v=1"},
        created_at=STARTED,
    )
    end = entry(job, 2, JobEventKind.JOB_FINISHED, finished("succeeded"), STARTED + 1)
    event = finished_event("s-1", job, [end], "")
    assert (event.traceparent, event.tracestate) == (f"00-{TRACE_ID}-{SPAN_ID}-01", "v=1")
