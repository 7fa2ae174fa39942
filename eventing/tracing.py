"""Traces (OpenTelemetry), the same on both sides: turned on by the standard ``OTEL_*`` variables,
off and nearly free without them. docs/tracing.md says what is traced and how to read it.

- **Off by default.** `configure_tracing`, called once at each process's start (the harness, the
  control plane's functions, `vwm up`), installs an SDK `TracerProvider` only when
  ``OTEL_TRACES_EXPORTER`` names an exporter (``otlp``, ``console``, or any installed exporter's
  entry point). Unset or ``none``: no SDK is loaded, `tracer` hands out the API's no-op tracer,
  and the HTTP middleware (`eventing.http_tracing`) passes requests straight through.
- **The SDK reads its own settings.** Which exporters is the one choice made here; everything
  else is read by the part it configures: ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES``
  by `Resource.create`, ``OTEL_TRACES_SAMPLER(_ARG)`` by `TracerProvider`, ``OTEL_BSP_*`` by
  `BatchSpanProcessor`, ``OTEL_EXPORTER_OTLP_*`` by the OTLP exporter. ``otlp`` means OTLP over
  HTTP with protobuf (the protocol the spec makes the default; the Python SDK alone picks gRPC),
  unless ``OTEL_EXPORTER_OTLP(_TRACES)_PROTOCOL`` says ``grpc``.
- **Someone else's provider wins.** A process started under ``opentelemetry-instrument``, or
  embedded in an app that installed a provider, keeps that provider; VWM's spans go to it.
- **Context crosses every hop as W3C Trace Context.** HTTP headers through the configured
  propagators (``OTEL_PROPAGATORS``, W3C ``traceparent`` by default: `inject_headers`,
  `extract_headers`); CloudEvents through the CloudEvents distributed-tracing extension, whose
  ``traceparent`` and ``tracestate`` attributes are always W3C (`event_trace`, `with_trace`,
  `context_of`, `continuing`). An event keeps the trace context it was published with, whether
  or not tracing is on where it passes.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping, MutableMapping
from typing import TYPE_CHECKING

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from eventing.errors import VwmError
from eventing.events import MAX_TRACESTATE_CHARS, VwmEvent

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace.export import SpanExporter

logger = logging.getLogger(__name__)

CONTROL_PLANE_SERVICE = "vwm-control-plane"
HARNESS_SERVICE = "vwm-harness"
TRACER_NAME = "vwm"

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
EXPORTERS_VARIABLE = "OTEL_TRACES_EXPORTER"
_OTLP_HTTP = "http/protobuf"
_NO_EXPORTER = "none"

# The CloudEvents distributed-tracing extension is W3C Trace Context whatever OTEL_PROPAGATORS
# says for HTTP: its attributes are named after W3C's headers.
_W3C = TraceContextTextMapPropagator()
_NO_OP = trace.NoOpTracer()

_provider: trace.TracerProvider | None = None


class TracingSettingsError(VwmError, ValueError):
    """The ``OTEL_*`` variables ask for tracing that cannot be set up; the message names the
    variable and what to set instead. The process refuses to start, as for its own settings."""

    code = "invalid_tracing_settings"


# -- turning it on ------------------------------------------------------------------------------


def configure_tracing(service_name: str) -> bool:
    """Set up tracing for this process from its ``OTEL_*`` variables (see the module). True when
    spans are recorded from now on. Idempotent: a second call keeps the first one's provider.
    `service_name` is the ``service.name`` unless ``OTEL_SERVICE_NAME`` (or
    ``OTEL_RESOURCE_ATTRIBUTES``) sets one. Raises `TracingSettingsError`."""
    global _provider
    if _provider is not None:
        return True
    installed = trace.get_tracer_provider()
    if not isinstance(installed, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        _provider = installed  # opentelemetry-instrument, or the embedding app, set it up
        return True
    names = exporter_names(os.environ)
    if not names or _sdk_disabled(os.environ):
        return False
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    exporters = [_exporter(name) for name in names]
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: service_name}))
    provider = TracerProvider(resource=resource)
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)  # instrumentation that asks the API finds it too
    _provider = provider
    logger.info(
        "tracing on",
        extra={"exporters": names, "service": resource.attributes.get(SERVICE_NAME)},
    )
    return True


def exporter_names(environ: Mapping[str, str]) -> list[str]:
    """The exporters ``OTEL_TRACES_EXPORTER`` names, in order; empty (tracing off) when it is
    unset, empty or ``none``."""
    raw = environ.get(EXPORTERS_VARIABLE, "")
    names = [name.strip().lower() for name in raw.split(",")]
    return [name for name in names if name and name != _NO_EXPORTER]


# A collector's credentials may be in these: a backend keeps them with the harness's secrets.
SECRET_OTEL_VARIABLES = frozenset(
    {"OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"}
)
# A harness names itself (`HARNESS_SERVICE`) rather than take the control plane's name.
_OWN_OTEL_VARIABLES = frozenset({"OTEL_SERVICE_NAME"})


def harness_tracing_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The ``OTEL_*`` settings a harness the control plane starts takes from `environ` (the
    control plane's): all of them but the service name while they turn tracing on, none while
    they do not, so its sessions trace exactly when it does."""
    if not exporter_names(environ) or _sdk_disabled(environ):
        return {}
    return {
        name: value
        for name, value in environ.items()
        if name.startswith("OTEL_") and name not in _OWN_OTEL_VARIABLES
    }


def _sdk_disabled(environ: Mapping[str, str]) -> bool:
    return environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


def _exporter(name: str) -> SpanExporter:
    """The exporter `name` stands for, built with no arguments: it reads its own variables."""
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if name in ("otlp", "otlp_proto_http"):
        protocol = (
            os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
            or _OTLP_HTTP
        ).strip()
        if name == "otlp" and protocol == "grpc":
            return _plugin("otlp_proto_grpc", "opentelemetry-exporter-otlp-proto-grpc")
        if protocol != _OTLP_HTTP:
            raise TracingSettingsError(
                f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported: use "
                f"{_OTLP_HTTP!r} (the default) or 'grpc' (with "
                "opentelemetry-exporter-otlp-proto-grpc installed)"
            )
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    return _plugin(name, None)


def _plugin(name: str, package: str | None) -> SpanExporter:
    """An exporter another package registers (the SDK's ``opentelemetry_traces_exporter``
    entry points: how opentelemetry-instrument finds them too)."""
    from importlib.metadata import entry_points

    found = list(entry_points(group="opentelemetry_traces_exporter", name=name))
    if not found:
        install = f"install {package}" if package else "install the package that provides it"
        raise TracingSettingsError(
            f"{EXPORTERS_VARIABLE} names {name!r}, which no installed package provides: use "
            f"'otlp' (OTLP over HTTP), 'console' or 'none', or {install}"
        )
    exporter: SpanExporter = found[0].load()()
    return exporter


# -- using it -----------------------------------------------------------------------------------


def enabled() -> bool:
    """Whether spans are recorded in this process (a provider is set up)."""
    return _provider is not None


def provider() -> trace.TracerProvider | None:
    """The provider spans go to; None when tracing is off."""
    return _provider


def tracer(name: str = TRACER_NAME) -> trace.Tracer:
    """A tracer of the configured provider, or the API's no-op tracer when tracing is off (its
    spans carry their parent's context on, and record nothing)."""
    if _provider is None:
        return _NO_OP
    return _provider.get_tracer(name)


@contextlib.contextmanager
def use_provider(chosen: trace.TracerProvider | None) -> Iterator[None]:
    """Record spans with `chosen` (None: tracing off) inside the block, for tests: the API's
    global provider can be set only once per process."""
    global _provider
    before, _provider = _provider, chosen
    try:
        yield
    finally:
        _provider = before


# -- HTTP headers -------------------------------------------------------------------------------


def inject_headers(headers: MutableMapping[str, str], context: Context | None = None) -> None:
    """Add the trace context of `context` (default: the current one) to outgoing `headers`, by
    the configured propagators (W3C ``traceparent``/``tracestate`` unless ``OTEL_PROPAGATORS``
    says otherwise). Nothing is added when there is no valid span."""
    propagate.inject(headers, context=context)


def extract_headers(headers: Mapping[str, str]) -> Context:
    """The trace context incoming `headers` carry (an empty context when none)."""
    return propagate.extract(headers)


# -- CloudEvents (the distributed-tracing extension) --------------------------------------------


def event_trace(context: Context | None = None) -> dict[str, str]:
    """The ``traceparent`` (and ``tracestate``) attributes for an event published in `context`
    (default: the current one); empty when there is no valid span."""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier, context=context)
    if not carrier.get(TRACEPARENT):
        return {}
    attributes = {TRACEPARENT: carrier[TRACEPARENT]}
    if (state := carrier.get(TRACESTATE)) and len(state) <= MAX_TRACESTATE_CHARS:
        attributes[TRACESTATE] = state
    return attributes


def with_trace(event: VwmEvent, context: Context | None = None) -> VwmEvent:
    """`event` carrying the trace context it is published in. One that already carries one
    keeps it: the extension names the context the event was first sent in, never a hop's."""
    if event.traceparent is not None:
        return event
    attributes = event_trace(context)
    if not attributes:
        return event
    return event.model_copy(update=attributes)


def context_of(event: VwmEvent) -> Context | None:
    """The trace context the event was published in; None when it carries none that is valid."""
    if event.traceparent is None:
        return None
    carrier = {TRACEPARENT: event.traceparent}
    if event.tracestate:
        carrier[TRACESTATE] = event.tracestate
    found = _W3C.extract(carrier)
    return found if trace.get_current_span(found).get_span_context().is_valid else None


@contextlib.contextmanager
def continuing(event: VwmEvent) -> Iterator[None]:
    """Work done inside the block (spans, HTTP calls, tasks it creates) continues the event's
    trace: its context becomes the current one, unless the current span already belongs to
    that trace (the HTTP hop that brought the event carried it on: its span is closer)."""
    found = context_of(event)
    if found is None:
        yield
        return
    event_trace_id = trace.get_current_span(found).get_span_context().trace_id
    if trace.get_current_span().get_span_context().trace_id == event_trace_id:
        yield
        return
    token = otel_context.attach(found)
    try:
        yield
    finally:
        otel_context.detach(token)
