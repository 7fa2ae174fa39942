"""Traces of a real harness running claude against the fake provider, exported over OTLP/HTTP to
a receiver in the test (docs/tracing.md): the job's span continues the trace its prompt came
in (an HTTP ``traceparent``, or a CloudEvent's), its model calls are its children with the
metered tokens, and the job's events carry its trace context."""

from __future__ import annotations

import uuid

import pytest

from eventing import codec
from eventing.events import JOB_COMPLETED, PromptRequested, new_event
from eventing.model_calls import ModelCall
from tests.e2e.conftest import MODELS, bootstrap_body, harness_env, start_harness
from tests.support.harness_process import TOKEN
from tests.support.otlp_receiver import ReceivedSpan, children, otlp_receiver

pytestmark = pytest.mark.cli

SESSION = "s-traced"
WORKER = "tracer"


def traceparent(trace_id: str, span_id: str) -> str:
    return f"00-{trace_id}-{span_id}-01"


def job_span(spans: list[ReceivedSpan], trace_id: str) -> ReceivedSpan | None:
    return next(
        (s for s in spans if s.trace_id == trace_id and s.name == f"invoke_agent {WORKER}"), None
    )


def ended_job(receiver, job_id: str):
    finals = [e for e in receiver.events if e.jobid == job_id and e.type == JOB_COMPLETED]
    return finals[0] if finals else None


def check_job_trace(receiver, job_id: str, trace_id: str) -> ReceivedSpan:
    """The job's span and its model calls' spans, checked against the job's own record (its
    job.completed event, whose calls the meter measured); returns the job's span."""
    spans = receiver.wait_for(
        lambda spans: (
            (job := job_span(spans, trace_id)) is not None
            and ended_job(receiver, job_id) is not None
            and len(children(spans, job)) >= len(ended_job(receiver, job_id).data.calls or [])
        )
    )
    job = job_span(spans, trace_id)
    assert job is not None
    assert job.service == "vwm-harness"
    assert job.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert job.attributes["gen_ai.agent.name"] == WORKER
    assert job.attributes["gen_ai.conversation.id"] == SESSION
    assert job.attributes["gen_ai.provider.name"] == "anthropic"
    assert job.attributes["vwm.job.id"] == job_id
    assert job.attributes["vwm.job.status"] == "succeeded"
    assert job.status != "ERROR"

    completed = ended_job(receiver, job_id)
    calls = [ModelCall.model_validate(call) for call in completed.data.calls or []]
    assert calls, "the meter measured no call"
    chats = sorted(children(spans, job), key=lambda s: s.attributes["vwm.model_call.seq"])
    assert [s.attributes["vwm.model_call.seq"] for s in chats] == [c.seq for c in calls]
    for span, call in zip(chats, calls, strict=True):
        assert span.kind == "CLIENT"
        assert span.name == f"chat {call.model}"
        assert span.attributes["gen_ai.operation.name"] == "chat"
        assert span.attributes["gen_ai.request.model"] == call.model
        usage = call.usage
        assert span.attributes["gen_ai.usage.input_tokens"] == (
            usage.input + usage.cache_read + usage.cache_write
        )
        assert span.attributes["gen_ai.usage.output_tokens"] == usage.output
        assert span.attributes["gen_ai.usage.cache_read.input_tokens"] == usage.cache_read
        assert span.attributes["gen_ai.usage.cache_creation.input_tokens"] == usage.cache_write
        # The span is the call's own time, inside the job's.
        assert span.end_ns - span.start_ns == pytest.approx(call.latency_ms * 1e6, abs=1e4)
        assert job.start_ns <= span.start_ns <= span.end_ns <= job.end_ns
    total_output = sum(c.usage.output for c in calls)
    assert sum(s.attributes["gen_ai.usage.output_tokens"] for s in chats) == total_output
    assert total_output > 0

    # Every event the job published carries the job span's context.
    published = [e for e in receiver.events if e.jobid == job_id]
    assert {e.traceparent for e in published} == {traceparent(trace_id, job.span_id)}
    # No prompt, no key, in any span of the job.
    for span in [job, *chats]:
        for value in span.attributes.values():
            assert "say hi" not in str(value) and "test-key" not in str(value)
    return job


def test_a_job_continues_the_callers_trace_and_its_model_calls_are_children(
    tmp_path, repos, fake_provider
):
    with otlp_receiver() as receiver:
        env = harness_env("claude", fake_provider.base_url)
        env.update(receiver.env())
        env.update(
            {
                "VWM_SESSION_ID": SESSION,
                "VWM_WORKER": WORKER,
                "VWM_EVENT_SINK": f"{receiver.url}/events",
                "VWM_EVENT_BATCH_S": "0.01",
            }
        )
        harness = start_harness(tmp_path, "claude", env)
        try:
            with harness.client() as client:
                assert client.post("/v1/bootstrap", json=bootstrap_body(repos)).status_code == 200

                # Over HTTP, as the control plane starts a job: its traceparent header.
                caller_trace, caller_span = uuid.uuid4().hex, uuid.uuid4().hex[:16]
                started = client.post(
                    "/v1/jobs",
                    json={"prompt": "say hi", "mode": "sync"},
                    headers={"traceparent": traceparent(caller_trace, caller_span)},
                )
                assert started.json()["status"] == "succeeded", started.text
                job = check_job_trace(receiver, started.json()["job_id"], caller_trace)
                # The job's span may be exported before its parent's (the request's server span,
                # ended once the answer is sent): wait for that one.
                spans = receiver.wait_for(
                    lambda spans: any(s.span_id == job.parent_span_id for s in spans)
                )
                (server,) = [s for s in spans if s.span_id == job.parent_span_id]
                assert (server.kind, server.name) == ("SERVER", "POST /v1/jobs")
                assert server.parent_span_id == caller_span
                assert server.attributes["http.route"] == "/v1/jobs"

                # As a CloudEvent: the prompt request's traceparent, not the delivery's.
                sender_trace, sender_span = uuid.uuid4().hex, uuid.uuid4().hex[:16]
                request = new_event(
                    PromptRequested(prompt="say hi", model=MODELS["claude"]),
                    source="/tests/tracing",
                    session_id=SESSION,
                    trace={"traceparent": traceparent(sender_trace, sender_span)},
                )
                headers, body = codec.to_binary(request)
                delivered = client.post(
                    "/v1/events",
                    content=body,
                    headers={**headers, "Authorization": f"Bearer {TOKEN}"},
                )
                assert delivered.json()["status"] == "succeeded", delivered.text
                job = check_job_trace(receiver, delivered.json()["job_id"], sender_trace)
                assert job.parent_span_id == sender_span
                assert job.attributes["vwm.job.causation_id"] == request.id
        finally:
            harness.stop()
