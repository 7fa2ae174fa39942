"""One trace from the caller to the model calls (docs/tracing.md): the SDK puts its caller's
``traceparent`` on the request, the embedded control plane (`vwm up`, exporting over OTLP/HTTP
to a receiver in the test) continues it and hands it to the session's harness, over HTTP for a
sync prompt and inside the prompt request's CloudEvent for an async one; the harness (started
with the control plane's OTEL_* settings) exports the job's span and its model calls' spans
into the same trace. A prompt request another service posts to the broker as a CloudEvent
continues the trace its traceparent attribute names, else the one its HTTP request was in."""

from __future__ import annotations

import uuid

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider

from eventing import codec
from eventing.events import PromptRequested, new_event, prompt_job_id
from tests.e2e.conftest import make_bare_repo
from tests.support.control_plane import ControlPlane, add_claude_workers, kill_harnesses
from tests.support.otlp_receiver import ReceivedSpan, children, otlp_receiver
from vwm.sdk.client import Client

pytestmark = pytest.mark.cli

WORKER = "w"


def hex_trace(span) -> str:
    return format(span.get_span_context().trace_id, "032x")


def hex_span(span) -> str:
    return format(span.get_span_context().span_id, "016x")


def agent_span(spans: list[ReceivedSpan], trace_id: str) -> ReceivedSpan | None:
    return next(
        (s for s in spans if s.trace_id == trace_id and s.name == f"invoke_agent {WORKER}"), None
    )


def ancestry(spans: list[ReceivedSpan], span: ReceivedSpan) -> list[ReceivedSpan]:
    """`span`'s ancestors among `spans`, nearest first, up to one whose parent is not here."""
    by_id = {s.span_id: s for s in spans if s.trace_id == span.trace_id}
    found = []
    while (parent := by_id.get(span.parent_span_id)) is not None:
        found.append(parent)
        span = parent
    return found


def test_a_prompt_is_one_trace_from_the_caller_to_the_model_calls(tmp_path, fake_provider):
    caller = TracerProvider().get_tracer("the caller's application")
    repo = make_bare_repo(tmp_path / "worker.git", {"README.md": "# knowledge\n"})
    task = make_bare_repo(tmp_path / "task.git", {"README.md": "# task\n"})
    with otlp_receiver() as receiver:
        plane = ControlPlane(tmp_path / "data", {"FAKE_PROVIDER_KEY": "test-key", **receiver.env()})
        plane.start()
        try:
            with plane.client() as http:
                add_claude_workers(http, fake_provider.base_url, repo)
            with (
                Client(plane.url, str(plane.admin_key)) as client,
                client.worker(WORKER).session(session_repo={"url": str(task)}) as session,
            ):
                # Sync: the control plane calls the harness over HTTP.
                with caller.start_as_current_span("ask") as asked:
                    result = session.prompt("say hi")
                assert result.ok
                trace_id = hex_trace(asked)
                spans = receiver.wait_for(  # every span up to the caller's has arrived
                    lambda spans: (
                        (job := agent_span(spans, trace_id)) is not None
                        and children(spans, job)
                        and ancestry(spans, job)[-1].parent_span_id == hex_span(asked)
                        and "process dev.vwm.job.started" in {s.name for s in children(spans, job)}
                    )
                )
                job = agent_span(spans, trace_id)
                assert job is not None and job.service == "vwm-harness"
                chain = [(s.service, s.kind, s.name) for s in ancestry(spans, job)]
                assert chain == [
                    ("vwm-harness", "SERVER", "POST /v1/jobs"),
                    ("vwm-control-plane", "CLIENT", "POST"),
                    ("vwm-control-plane", "SERVER", "POST /v1/prompts"),
                ]
                assert ancestry(spans, job)[-1].parent_span_id == hex_span(asked)
                calls = client.calls(result.job_id)
                chats = sorted(
                    (s for s in children(spans, job) if s.kind == "CLIENT"),
                    key=lambda s: s.attributes["vwm.model_call.seq"],
                )
                assert {s.name for s in chats} == {f"chat {c['model']}" for c in calls}
                assert [s.attributes["gen_ai.usage.output_tokens"] for s in chats] == [
                    c["usage"]["output"] for c in calls
                ]
                # The job's events, published by the harness, are handled in the job's trace.
                handled = [s.name for s in children(spans, job) if s.kind == "CONSUMER"]
                assert "process dev.vwm.job.started" in handled

                # Async: the prompt request is a CloudEvent through the broker.
                with caller.start_as_current_span("submit") as submitted:
                    handle = session.submit("say hi")
                assert handle.wait(poll_s=0.2, timeout_s=60).ok
                trace_id = hex_trace(submitted)
                wanted = {
                    ("vwm-control-plane", "SERVER", "POST /v1/prompts"),
                    # The broker's delivery to the harness ran in the event's trace.
                    ("vwm-harness", "SERVER", "POST /v1/events"),
                    # ... and so did the control plane's work on the job's events.
                    ("vwm-control-plane", "CONSUMER", "process dev.vwm.job.completed"),
                }
                spans = receiver.wait_for(
                    lambda spans: (
                        (job := agent_span(spans, trace_id)) is not None
                        and children(spans, job)
                        and wanted
                        <= {(s.service, s.kind, s.name) for s in spans if s.trace_id == trace_id}
                    )
                )
                job = agent_span(spans, trace_id)
                assert job is not None
                assert job.attributes["vwm.job.id"] == handle.id
                (server,) = [s for s in spans if s.span_id == job.parent_span_id]
                assert (server.service, server.name) == ("vwm-harness", "POST /v1/events")

                # Another service's prompt request, posted to the broker: its own traceparent
                # attribute wins; without one, the trace of the HTTP request that posted it.
                for extension in (True, False):
                    header_trace, event_trace = uuid.uuid4().hex, uuid.uuid4().hex
                    request = new_event(
                        PromptRequested(prompt="say hi"),
                        source="/tests/another-service",
                        session_id=session.id,
                        trace={"traceparent": f"00-{event_trace}-{'1' * 16}-01"}
                        if extension
                        else None,
                    )
                    headers, body = codec.to_binary(request)
                    headers["traceparent"] = f"00-{header_trace}-{'2' * 16}-01"
                    posted = httpx.post(
                        f"{plane.url}/v1/broker",
                        content=body,
                        headers={**headers, "Authorization": f"Bearer {plane.admin_key}"},
                    )
                    assert posted.status_code == 202, posted.text
                    trace_id = event_trace if extension else header_trace
                    spans = receiver.wait_for(
                        lambda spans, t=trace_id: (
                            (job := agent_span(spans, t)) is not None and children(spans, job)
                        )
                    )
                    job = agent_span(spans, trace_id)
                    assert job is not None
                    assert job.attributes["vwm.job.id"] == prompt_job_id(request.source, request.id)
                    assert job.attributes["vwm.job.causation_id"] == request.id
                    other = header_trace if extension else event_trace
                    assert agent_span(spans, other) is None
        finally:
            plane.stop()
            kill_harnesses(plane.data_dir)
