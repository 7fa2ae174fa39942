"""`eventing.tracing`: off without OTEL_* variables (no SDK even loaded), the SDK set up by them
when asked (and reading its own settings), and W3C trace context across HTTP headers and
CloudEvent attributes (the CloudEvents distributed-tracing extension)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from eventing import codec, signatures, tracing
from eventing.events import PromptRequested, Tick, VwmEvent, decode_event, new_event
from tests.support.harness_process import REPO_ROOT

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
SPAN_ID = "b7ad6b7169203331"
PARENT = f"00-{TRACE_ID}-{SPAN_ID}-01"


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any OTEL_* variable, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return {**env, **extra}


def report_of(code: str, env: dict[str, str]) -> dict:
    """What `code` printed after ``REPORT`` (the console exporter prints spans too)."""
    result = run_python(code, env)
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("REPORT "))
    return json.loads(line.removeprefix("REPORT "))


def run_python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def spans():
    """Spans recorded by an in-memory SDK provider for the test's duration."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with tracing.use_provider(provider):
        yield exporter
    provider.shutdown()


# -- turning it on ------------------------------------------------------------------------------

# Builds both sides' apps as their processes do (functions.main sets tracing up at import), then
# reports what tracing installed.
STARTUP = """
    import json, sys
    import functions.main
    from harness.app import create_app
    from harness.settings import HarnessSettings
    from eventing import tracing
    from opentelemetry import trace
    started = tracing.configure_tracing("vwm-harness")
    create_app(HarnessSettings.from_env())
    with tracing.tracer().start_as_current_span("probe") as span:
        recording = span.is_recording()
    provider = trace.get_tracer_provider()
    print("REPORT", json.dumps({
        "started": started,
        "enabled": tracing.enabled(),
        "provider": type(provider).__module__ + "." + type(provider).__name__,
        "recording": recording,
        "sdk_loaded": sorted(m for m in sys.modules if m.startswith("opentelemetry.sdk")),
        "service": getattr(provider, "resource", None) and provider.resource.attributes.get("service.name"),
    }), flush=True)
"""


@pytest.mark.parametrize("exporters", [None, "", "none"])
def test_without_an_exporter_no_sdk_provider_is_installed_nor_loaded(exporters, tmp_path):
    env = clean_env(VWM_WORKSPACE=str(tmp_path / "ws"))
    if exporters is not None:
        env["OTEL_TRACES_EXPORTER"] = exporters
    assert report_of(STARTUP, env) == {
        "started": False,
        "enabled": False,
        "provider": "opentelemetry.trace.ProxyTracerProvider",
        "recording": False,
        "sdk_loaded": [],
        "service": None,
    }


def test_an_exporter_installs_the_sdk_which_reads_its_own_settings(tmp_path):
    env = clean_env(VWM_WORKSPACE=str(tmp_path / "ws"), OTEL_TRACES_EXPORTER="console")
    report = report_of(STARTUP, env)
    assert report["started"] and report["enabled"] and report["recording"]
    assert report["provider"] == "opentelemetry.sdk.trace.TracerProvider"
    # functions.main set it up first, under the control plane's name; later calls keep it.
    assert report["service"] == "vwm-control-plane"

    # OTEL_SERVICE_NAME and the sampler are the SDK's to read.
    env.update(OTEL_SERVICE_NAME="reviewer-pool", OTEL_TRACES_SAMPLER="always_off")
    report = report_of(STARTUP, env)
    assert report["service"] == "reviewer-pool"
    assert report["enabled"] and not report["recording"]


def test_the_console_exporter_writes_spans_to_stdout():
    code = """
        from eventing import tracing
        tracing.configure_tracing("vwm-control-plane")
        with tracing.tracer().start_as_current_span("probe-span"):
            pass
        tracing.provider().force_flush()
    """
    result = run_python(code, clean_env(OTEL_TRACES_EXPORTER="console"))
    assert result.returncode == 0, result.stderr
    assert '"name": "probe-span"' in result.stdout
    assert '"service.name": "vwm-control-plane"' in result.stdout


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"OTEL_TRACES_EXPORTER": "bogus"}, "'bogus'"),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ),
    ],
)
def test_settings_that_cannot_work_stop_the_harness_with_what_to_set(variables, named, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "harness"],
        cwd=REPO_ROOT,
        env=clean_env(VWM_WORKSPACE=str(tmp_path / "ws"), VWM_HARNESS_PORT="0", **variables),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert named in result.stderr
    assert "harness:" in result.stderr and "Traceback" not in result.stderr


def test_exporter_names_are_read_as_the_sdk_reads_them():
    assert tracing.exporter_names({}) == []
    assert tracing.exporter_names({"OTEL_TRACES_EXPORTER": "none"}) == []
    assert tracing.exporter_names({"OTEL_TRACES_EXPORTER": " OTLP, console "}) == [
        "otlp",
        "console",
    ]


def test_harnesses_take_the_control_planes_tracing_settings_but_its_name():
    assert tracing.harness_tracing_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}) == {}
    on = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
        "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer x",
        "OTEL_SERVICE_NAME": "vwm-admin",
        "VWM_DATA_DIR": "/data",
    }
    assert tracing.harness_tracing_env(on) == {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
        "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer x",
    }
    assert "OTEL_EXPORTER_OTLP_HEADERS" in tracing.SECRET_OTEL_VARIABLES
    assert tracing.harness_tracing_env({**on, "OTEL_SDK_DISABLED": "true"}) == {}


# -- HTTP headers -------------------------------------------------------------------------------


def test_http_headers_carry_the_current_span_and_bring_it_back(spans):
    with tracing.tracer().start_as_current_span("caller") as span:
        headers: dict[str, str] = {}
        tracing.inject_headers(headers)
    context = span.get_span_context()
    assert headers["traceparent"] == (
        f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
    )
    found = trace.get_current_span(tracing.extract_headers(headers)).get_span_context()
    assert (found.trace_id, found.span_id, found.is_remote) == (
        context.trace_id,
        context.span_id,
        True,
    )


def test_no_span_no_headers(spans):
    headers: dict[str, str] = {}
    tracing.inject_headers(headers)
    assert headers == {}
    assert tracing.event_trace() == {}


# -- CloudEvents --------------------------------------------------------------------------------


def traced_event(**trace_attributes: str) -> VwmEvent:
    return new_event(
        PromptRequested(prompt="hi"), source="/tests", session_id="s1", trace=trace_attributes
    )


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_an_events_trace_context_travels_in_either_mode(mode):
    event = traced_event(traceparent=PARENT, tracestate="vendor=opaque")
    headers, body = (codec.to_binary if mode == "binary" else codec.to_structured)(event)
    if mode == "binary":
        assert headers["ce-traceparent"] == PARENT
        assert headers["ce-tracestate"] == "vendor=opaque"
    else:
        assert json.loads(body)["traceparent"] == PARENT
    received = codec.from_http(headers, body)
    assert (received.traceparent, received.tracestate) == (PARENT, "vendor=opaque")
    found = trace.get_current_span(tracing.context_of(received)).get_span_context()
    assert (f"{found.trace_id:032x}", f"{found.span_id:016x}") == (TRACE_ID, SPAN_ID)


@pytest.mark.parametrize(
    "attributes",
    [
        {"traceparent": "not-a-traceparent", "tracestate": "a=b"},
        {"traceparent": PARENT.upper()},
        {"traceparent": PARENT + "-extra"},
        {"traceparent": 42},
        {"tracestate": "a=b"},  # a state without a parent means nothing
    ],
)
def test_a_malformed_trace_context_is_dropped_never_refused(attributes):
    event = decode_event(
        {
            "specversion": "1.0",
            "id": "e1",
            "source": "/tests",
            "type": "dev.vwm.tick",
            **attributes,
        },
        {},
    )
    assert (event.traceparent, event.tracestate) == (None, None)
    assert tracing.context_of(event) is None


def test_an_oversized_tracestate_is_dropped_and_its_parent_kept():
    event = decode_event(
        {
            "specversion": "1.0",
            "id": "e1",
            "source": "/tests",
            "type": "dev.vwm.tick",
            "traceparent": PARENT,
            "tracestate": "a=" + "b" * 600,
        },
        {},
    )
    assert (event.traceparent, event.tracestate) == (PARENT, None)


def test_an_event_published_in_a_span_carries_it_and_keeps_the_first_one(spans):
    bare = new_event(Tick(), source="/tests")
    assert tracing.with_trace(bare) is bare  # no span: nothing to carry
    with tracing.tracer().start_as_current_span("publisher") as span:
        stamped = tracing.with_trace(bare)
        context = span.get_span_context()
        assert (
            stamped.traceparent
            == f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
        )
        # One that carries a context keeps it: the extension is the event's origin, not a hop.
        assert tracing.with_trace(traced_event(traceparent=PARENT)).traceparent == PARENT


def test_work_on_an_event_continues_its_trace_unless_already_in_it(spans):
    event = traced_event(traceparent=PARENT)
    with tracing.continuing(event), tracing.tracer().start_as_current_span("handle") as span:
        pass
    recorded = spans.get_finished_spans()[-1]
    assert f"{span.get_span_context().trace_id:032x}" == TRACE_ID
    assert recorded.parent is not None and f"{recorded.parent.span_id:016x}" == SPAN_ID

    # The HTTP hop that brought the event carried its trace on: its span is the nearer parent.
    hop = trace.NonRecordingSpan(
        trace.SpanContext(int(TRACE_ID, 16), int("1" * 16, 16), is_remote=True)
    )
    with trace.use_span(hop), tracing.continuing(event):
        assert trace.get_current_span() is hop

    # Another trace is replaced by the event's.
    other = trace.NonRecordingSpan(
        trace.SpanContext(uuid.uuid4().int, int("2" * 16, 16), is_remote=True)
    )
    with trace.use_span(other), tracing.continuing(event):
        assert f"{trace.get_current_span().get_span_context().span_id:016x}" == SPAN_ID
    with tracing.continuing(new_event(Tick(), source="/tests")):
        assert not trace.get_current_span().get_span_context().is_valid


def test_a_signed_prompt_request_verifies_whatever_trace_context_a_hop_adds():
    signed = signatures.signed("session-token", traced_event())
    with_parent = signed.model_copy(update={"traceparent": PARENT, "tracestate": "x=y"})
    assert signatures.verify("session-token", with_parent)
