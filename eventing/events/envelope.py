"""The typed envelope of every VWM CloudEvent, the catalogue of types, and how to build and decode.

A `VwmEvent` is a CloudEvent's attributes (``id``, ``source``, ``type``, ``time``, ``subject``), our
extension attributes (``sessionid``, ``jobid``, ``seq``: a Trigger filters on them; ``causationid``;
a prompt request's signature ``vwmauth``, see `eventing.signatures`; the CloudEvents
distributed-tracing extension's ``traceparent`` and ``tracestate``, see `eventing.tracing`) and its
data as
the payload model the catalogue names for its type. Publishers build events with `new_event`;
receivers turn attributes + data (what `eventing.codec` read off the wire) into one with
`decode_event`, which raises `EventError` with a stable code for anything it will never accept.
No CloudEvents SDK here: `eventing.codec` is the only module that touches it.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import AwareDatetime, ConfigDict, Field, SerializeAsAny, ValidationError

from eventing.events import payloads as p
from eventing.inputs import InputError, ascii_uint, timestamp
from eventing.lazy_models import LazyModel

SPEC_VERSION = "1.0"
JSON_CONTENT_TYPE = "application/json"
CONTROL_PLANE_SOURCE = "/vwm/control-plane"
_HARNESS_SOURCE_PREFIX = "/vwm/harness/"
_ID = re.compile(p.ID_PATTERN)
# Attributes the CloudEvents spec defines; any other attribute is an extension.
CORE_ATTRIBUTES = frozenset(
    {"specversion", "id", "source", "type", "time", "subject", "datacontenttype", "dataschema"}
)
EXTENSIONS = ("sessionid", "jobid", "seq", "causationid", "vwmauth")
# The CloudEvents distributed-tracing extension: W3C Trace Context, allowed on every type. A
# receiver reads only a well-formed version-00 `traceparent` and drops anything else: trace
# context is a hint, and an event is never refused for it.
TRACE_EXTENSIONS = ("traceparent", "tracestate")
TRACEPARENT_PATTERN = r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"
_TRACEPARENT = re.compile(TRACEPARENT_PATTERN)
MAX_TRACESTATE_CHARS = 512  # what W3C asks every hop to pass on at least


class EventError(InputError):
    """An event this contract will never accept. `status` is what an HTTP edge answers (a 4xx:
    a broker must not retry it); `code` is stable and documented in docs/events.md. An
    `InputError`, so the edges that already map those map this one too."""

    retryable = False

    def __init__(self, code: str, message: str, *, status: int = 400, **details: Any) -> None:
        super().__init__(code, message, **details)
        self.status = status


@dataclass(frozen=True)
class EventSpec:
    """One catalogue entry: the type, its payload model, and which extensions it must carry."""

    type: str
    payload: builtins.type[p.Payload]  # the field above shadows the builtin in this body
    required: frozenset[str]
    optional: frozenset[str] = frozenset()

    @property
    def allowed(self) -> frozenset[str]:
        return self.required | self.optional


def _spec(type_: str, payload: type[p.Payload], *required: str, optional: str = "") -> EventSpec:
    return EventSpec(type_, payload, frozenset(required), frozenset(optional.split()))


PROMPT_REQUESTED = "dev.vwm.prompt.requested"
JOB_STARTED = "dev.vwm.job.started"
JOB_OUTPUT = "dev.vwm.job.output"
JOB_COMPLETED = "dev.vwm.job.completed"
JOB_FAILED = "dev.vwm.job.failed"
SESSION_CREATED = "dev.vwm.session.created"
SESSION_READY = "dev.vwm.session.ready"
SESSION_END_REQUESTED = "dev.vwm.session.end.requested"
SESSION_ENDED = "dev.vwm.session.ended"
LEARNING_COMPLETED = "dev.vwm.learning.completed"
TICK = "dev.vwm.tick"
# A Knative PingSource's events always have this type (a PingSource cannot set another), so the
# tick of production (infra/knative/tick.yaml) arrives as one: read as a `TICK`, its data the
# `Tick` payload. VWM subscribes to no other pings.
KNATIVE_PING = "dev.knative.sources.ping"

_JOB = ("sessionid", "jobid", "seq")
CATALOGUE: dict[str, EventSpec] = {
    spec.type: spec
    for spec in (
        _spec(PROMPT_REQUESTED, p.PromptRequested, "sessionid", optional="vwmauth"),
        _spec(JOB_STARTED, p.JobStarted, *_JOB, optional="causationid"),
        _spec(JOB_OUTPUT, p.JobOutput, *_JOB, optional="causationid"),
        _spec(JOB_COMPLETED, p.JobCompleted, *_JOB, optional="causationid"),
        _spec(JOB_FAILED, p.JobFailed, *_JOB, optional="causationid"),
        _spec(SESSION_CREATED, p.SessionCreated, "sessionid"),
        _spec(SESSION_READY, p.SessionReady, "sessionid"),
        _spec(SESSION_END_REQUESTED, p.SessionEndRequested, "sessionid"),
        _spec(SESSION_ENDED, p.SessionEnded, "sessionid"),
        _spec(LEARNING_COMPLETED, p.LearningCompleted, "sessionid", "jobid"),
        _spec(TICK, p.Tick),
    )
}
_TYPE_OF_PAYLOAD = {spec.payload: spec.type for spec in CATALOGUE.values()}


class VwmEvent(LazyModel):
    """One CloudEvent of the catalogue, decoded. Build with `new_event`, read with `decode_event`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=200)
    source: str = Field(min_length=1, max_length=1024, description="a URI reference")
    type: str
    time: AwareDatetime | None = Field(default=None, description="when it happened, UTC")
    subject: str | None = Field(default=None, max_length=1024)
    sessionid: str | None = Field(default=None, pattern=p.ID_PATTERN)
    jobid: str | None = Field(default=None, pattern=p.ID_PATTERN)
    seq: int | None = Field(default=None, ge=1, description="the job log's seq this reaches")
    causationid: str | None = Field(
        default=None, min_length=1, max_length=200, description="the id of the event it answers"
    )
    # Any string is read (a malformed one is a signature that does not verify); never logged.
    vwmauth: str | None = Field(
        default=None, max_length=200, description="the control plane's signature", repr=False
    )
    traceparent: str | None = Field(
        default=None, pattern=TRACEPARENT_PATTERN, description="W3C trace context it was sent in"
    )
    tracestate: str | None = Field(default=None, max_length=MAX_TRACESTATE_CHARS)
    data: SerializeAsAny[p.Payload]

    @property
    def spec(self) -> EventSpec:
        return CATALOGUE[self.type]

    def attributes(self) -> dict[str, Any]:
        """The CloudEvent attributes, extensions included (absent ones left out); ``time`` in
        RFC 3339 UTC with a ``Z``, ``seq`` an integer."""
        attributes: dict[str, Any] = {
            "specversion": SPEC_VERSION,
            "id": self.id,
            "source": self.source,
            "type": self.type,
            "datacontenttype": JSON_CONTENT_TYPE,
        }
        if self.time is not None:
            attributes["time"] = format_time(self.time)
        if self.subject is not None:
            attributes["subject"] = self.subject
        for name in (*EXTENSIONS, *TRACE_EXTENSIONS):
            if (value := getattr(self, name)) is not None:
                attributes[name] = value
        return attributes

    def data_json(self) -> dict[str, Any]:
        return self.data.model_dump(mode="json")


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def utc_now() -> datetime:
    return datetime.now(UTC)


def new_event_id() -> str:
    return uuid.uuid4().hex


def job_event_id(job_id: str, seq: int) -> str:
    """A stable id for a harness's job event: the same fact re-sent (after a restart, from the
    job log) deduplicates on (source, id) even when the outbox that sent it first is gone."""
    return f"{job_id}.{seq}"


def prompt_job_id(source: str, event_id: str) -> str:
    """The job a `dev.vwm.prompt.requested` runs: derived from its `source` + `id`, so every
    delivery of the event (and every party that sees it: the control plane, the harness) names
    the same job, and the prompt runs once however often it is delivered. 32 characters of the
    job id alphabet."""
    digest = hashlib.sha256(f"{source}\x00{event_id}".encode()).hexdigest()
    return f"p{digest[:31]}"


def harness_source(session_id: str) -> str:
    return f"{_HARNESS_SOURCE_PREFIX}{session_id}"


def new_event(
    payload: p.Payload,
    *,
    source: str,
    session_id: str | None = None,
    job_id: str | None = None,
    seq: int | None = None,
    causation_id: str | None = None,
    subject: str | None = None,
    event_id: str | None = None,
    time: datetime | None = None,
    trace: Mapping[str, str] | None = None,
) -> VwmEvent:
    """The event for `payload`: its type from the catalogue, a fresh id unless given, now (UTC)
    unless given. `trace`: its ``traceparent`` and ``tracestate`` (`eventing.tracing.event_trace`
    of the context it is published in). Raises `EventError` if the extensions do not fit the
    type."""
    type_ = _TYPE_OF_PAYLOAD.get(type(payload))
    if type_ is None:
        raise TypeError(f"{type(payload).__name__} is not a payload of the event catalogue")
    event = VwmEvent(
        id=event_id or new_event_id(),
        source=source,
        type=type_,
        time=(time or utc_now()).astimezone(UTC),
        subject=subject,
        sessionid=session_id,
        jobid=job_id,
        seq=seq,
        causationid=causation_id,
        **_trace_attributes(trace or {}),
        data=payload,
    )
    _check_extensions(event)
    return event


def decode_event(attributes: Mapping[str, Any], data: Any) -> VwmEvent:
    """An event from its CloudEvent attributes (core and extensions, as strings or JSON values)
    and its data (the decoded JSON). Unknown extensions (``knativearrivaltime``) are ignored, and
    so is a ``traceparent`` or ``tracestate`` that is not well formed; everything else must fit
    the catalogue or `EventError` says what does not."""
    specversion = attributes.get("specversion")
    if specversion != SPEC_VERSION:
        raise EventError(
            "unsupported_specversion",
            f"CloudEvents specversion {str(specversion)[:20]!r} is not supported: send 1.0",
            specversion=str(specversion)[:20],
        )
    for name in ("id", "source", "type"):
        if not isinstance(attributes.get(name), str) or not attributes[name]:
            raise EventError(
                "missing_attribute", f"the event needs a non-empty {name!r}", attribute=name
            )
    event_type = TICK if attributes["type"] == KNATIVE_PING else attributes["type"]
    spec = CATALOGUE.get(event_type)
    if spec is None:
        raise EventError(
            "unknown_event_type",
            f"event type {attributes['type'][:200]!r} is not in the VWM catalogue (docs/events.md)",
            type=attributes["type"][:200],
        )
    content_type = attributes.get("datacontenttype")
    if content_type is not None and not _is_json_media(content_type):
        raise EventError(
            "unsupported_content_type",
            "event data must be JSON: datacontenttype 'application/json'",
            status=415,
            content_type=str(content_type)[:200],
        )
    payload = _payload(spec, data)
    try:
        event = VwmEvent(
            id=attributes["id"],
            source=attributes["source"],
            type=spec.type,
            time=_time(attributes.get("time")),
            subject=attributes.get("subject"),
            sessionid=_session_id(attributes.get("sessionid"), payload),
            jobid=attributes.get("jobid"),
            seq=_seq(attributes.get("seq")),
            causationid=attributes.get("causationid"),
            vwmauth=attributes.get("vwmauth"),
            **_trace_attributes(attributes),
            data=payload,
        )
    except ValidationError as exc:
        raise EventError(
            "invalid_attribute",
            f"the event's attributes do not fit the contract: {_first_error(exc)}",
            errors=_errors(exc),
        ) from None
    _check_extensions(event)
    return event


def _trace_attributes(attributes: Mapping[str, Any]) -> dict[str, str]:
    """The well-formed trace context among `attributes`: a version-00 ``traceparent``, and a
    ``tracestate`` only beside one."""
    parent = attributes.get("traceparent")
    if not isinstance(parent, str) or not _TRACEPARENT.fullmatch(parent):
        return {}
    found = {"traceparent": parent}
    state = attributes.get("tracestate")
    if (
        isinstance(state, str)
        and 0 < len(state) <= MAX_TRACESTATE_CHARS
        and state.isascii()
        and state.isprintable()
    ):
        found["tracestate"] = state
    return found


def _is_json_media(content_type: Any) -> bool:
    if not isinstance(content_type, str):
        return False
    media, _, params = content_type.partition(";")
    charset = params.replace(" ", "").lower()
    return media.strip().lower() == JSON_CONTENT_TYPE and charset in ("", "charset=utf-8")


def _time(raw: Any) -> datetime | None:
    if raw is None:
        return None
    if not isinstance(raw, str) or "T" not in raw:
        raise EventError(
            "invalid_attribute", "time must be an RFC 3339 date-time", attribute="time"
        )
    try:
        return timestamp(raw)
    except ValueError as exc:
        raise EventError("invalid_attribute", f"time: {exc}", attribute="time") from None


def _session_id(extension: Any, payload: p.Payload) -> Any:
    """The `sessionid` extension, or a prompt request's `session_id` when the sender wrote only
    the data; both present, they must agree."""
    in_data = getattr(payload, "session_id", None)
    if in_data is None:
        return extension
    if extension is None:
        return in_data
    if extension != in_data:
        raise EventError(
            "invalid_extension",
            f"the sessionid extension ({str(extension)[:64]!r}) and the data's session_id "
            f"({in_data!r}) name different sessions: send one, or the same in both",
            extension="sessionid",
        )
    return extension


def _seq(raw: Any) -> int | None:
    """`seq` is an integer attribute: a JSON number in structured mode, digits in a header."""
    if raw is None:
        return None
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, str):
        try:
            return ascii_uint(raw, "seq")
        except ValueError:
            pass
    raise EventError("invalid_extension", "seq must be a whole number from 1", extension="seq")


def _payload(spec: EventSpec, data: Any) -> p.Payload:
    if not isinstance(data, dict):
        raise EventError(
            "invalid_data",
            f"{spec.type} needs a JSON object as data, got {type(data).__name__}",
            type=spec.type,
        )
    try:
        # Through JSON so strict mode reads times and enums as the wire carries them.
        return spec.payload.model_validate_json(json.dumps(data, allow_nan=False))
    except ValueError as exc:  # ValidationError is one
        if not isinstance(exc, ValidationError):
            raise EventError("invalid_data", f"{spec.type}: data is not plain JSON") from None
        raise EventError(
            "invalid_payload",
            f"{spec.type} data does not fit its model: {_first_error(exc)}",
            type=spec.type,
            errors=_errors(exc),
        ) from None


def _check_extensions(event: VwmEvent) -> None:
    spec = event.spec
    for name in EXTENSIONS:
        present = getattr(event, name) is not None
        if name in spec.required and not present:
            raise EventError(
                "missing_extension",
                f"{spec.type} needs the extension attribute {name!r}",
                type=spec.type,
                extension=name,
            )
        if present and name not in spec.allowed:
            raise EventError(
                "invalid_extension",
                f"{spec.type} does not carry the extension attribute {name!r}",
                type=spec.type,
                extension=name,
            )
    if isinstance(event.data, p.JobOutput) and event.seq != event.data.last_seq:
        raise EventError(
            "invalid_extension",
            f"a job.output batch's seq must be its last_seq ({event.data.last_seq})",
            type=spec.type,
            extension="seq",
        )


def _errors(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": ".".join(str(part) for part in error["loc"]), "msg": error["msg"]}
        for error in exc.errors(include_url=False, include_input=False)[:20]
    ]


def _first_error(exc: ValidationError) -> str:
    first = _errors(exc)[0]
    return f"{first['loc']}: {first['msg']}" if first["loc"] else first["msg"]
