"""VWM events on the wire: CloudEvents over HTTP, binary and structured mode, both ways.

The only module that imports the CloudEvents SDK (`cloudevents` 1.x, pinned by functions-framework;
2.x moved this API): publishers call `to_binary`/`to_structured` to get headers and a body to POST,
the `events` function and the embedded broker call `from_http` on what they receive, and a
functions-framework CloudEvent target hands its SDK event to `from_cloudevent`. Every result is a
`VwmEvent` with its payload model; every refusal is one `EventError` with a stable code (a 4xx at
the edge, never a crash). import-linter keeps the SDK out of every other module.

Stricter than the SDK on purpose: a body is parsed by `eventing.inputs.load_json_object` (no NaN,
no duplicate keys, bounded depth) before the SDK sees it, the mode comes from the content type
(``application/cloudevents+json``) or the ``ce-specversion`` header and nothing else, and data
must be a JSON object: the SDK would hand a non-JSON body on as a string.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cloudevents import exceptions as ce_exceptions
from cloudevents.conversion import to_binary as _sdk_to_binary
from cloudevents.conversion import to_structured as _sdk_to_structured
from cloudevents.http import CloudEvent
from cloudevents.http import from_http as _sdk_from_http

from eventing.events import EventError, VwmEvent, decode_event
from eventing.events.envelope import JSON_CONTENT_TYPE, SPEC_VERSION
from eventing.inputs import InputError, load_json_object

STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"
# An event is a fact, not a file: output is batched well below this (Kafka's default is 1 MB).
MAX_EVENT_BYTES = 1_048_576


def to_binary(event: VwmEvent) -> tuple[dict[str, str], bytes]:
    """Headers (``ce-*`` attributes, ``content-type: application/json``) and the data as body."""
    headers, body = _sdk_to_binary(_sdk_event(event))
    return {name.lower(): str(value) for name, value in headers.items()}, _as_bytes(body)


def to_structured(event: VwmEvent) -> tuple[dict[str, str], bytes]:
    """``content-type: application/cloudevents+json`` and the whole event as one JSON body."""
    headers, body = _sdk_to_structured(_sdk_event(event))
    return {name.lower(): str(value) for name, value in headers.items()}, _as_bytes(body)


def from_http(headers: Mapping[str, str], body: bytes) -> VwmEvent:
    """The `VwmEvent` in an HTTP request, either mode, or `EventError`."""
    lowered = {name.lower(): value for name, value in headers.items()}
    if len(body) > MAX_EVENT_BYTES:
        raise EventError(
            "event_too_large",
            f"the event is {len(body)} bytes; at most {MAX_EVENT_BYTES} are accepted: "
            "publish output in smaller batches",
            status=413,
            size=len(body),
        )
    media = _media(lowered.get("content-type"))
    if media == BATCH_CONTENT_TYPE:
        raise EventError(
            "unsupported_content_type",
            "batched mode is not accepted: send one event per request",
            status=415,
            content_type=media,
        )
    if media == STRUCTURED_CONTENT_TYPE:
        specversion = _strict_json(body, "the structured event").get("specversion")
        _check_specversion(specversion)
        lowered = {name: value for name, value in lowered.items() if not name.startswith("ce-")}
    elif "ce-specversion" in lowered:
        if media != JSON_CONTENT_TYPE:
            raise EventError(
                "unsupported_content_type",
                "a binary-mode event carries JSON data: 'Content-Type: application/json'",
                status=415,
                content_type=(lowered.get("content-type") or "")[:200],
            )
        _check_specversion(lowered["ce-specversion"])
    else:
        raise EventError(
            "not_a_cloudevent",
            "the request is not a CloudEvent: send 'Content-Type: application/cloudevents+json' "
            "(structured mode) or 'ce-*' headers (binary mode)",
            content_type=(lowered.get("content-type") or "")[:200],
        )
    try:
        sdk_event = _sdk_from_http(lowered, body, data_unmarshaller=_data)
    except EventError:
        raise
    except ce_exceptions.DataUnmarshallerError as exc:
        raise EventError("invalid_data", f"the event's data is not a JSON object: {exc}") from None
    except ce_exceptions.MissingRequiredFields as exc:
        raise EventError(
            "missing_attribute", f"the event lacks a required attribute: {exc}"
        ) from None
    except Exception as exc:  # the SDK's own checks raise a mix of types on odd input
        raise EventError(
            "invalid_cloudevent", f"the request is not a valid CloudEvent: {exc}"
        ) from None
    return from_cloudevent(sdk_event)


def from_cloudevent(event: Any) -> VwmEvent:
    """The `VwmEvent` in a CloudEvents SDK event, e.g. what functions-framework hands a
    ``@cloud_event`` function (it parsed the request leniently: a non-JSON body arrives as a
    string, and is refused here)."""
    if not isinstance(event, CloudEvent):
        raise TypeError(f"expected a cloudevents.http.CloudEvent, got {type(event).__name__}")
    attributes = event.get_attributes()
    data = event.get_data()
    if isinstance(data, (bytes, bytearray)):
        data = _data(bytes(data))
    elif isinstance(data, str):
        raise EventError("invalid_data", "the event's data is not a JSON object")
    return decode_event(attributes, data)


def _check_specversion(specversion: Any) -> None:
    """Checked before the SDK, which also reads 0.3 (and fails oddly on a non-string)."""
    if specversion != SPEC_VERSION:
        shown = str(specversion)[:20]
        raise EventError(
            "unsupported_specversion",
            f"CloudEvents specversion {shown!r} is not supported: send 1.0",
            specversion=shown,
        )


def _sdk_event(event: VwmEvent) -> CloudEvent:
    return CloudEvent(event.attributes(), event.data_json())


def _data(raw: str | bytes | None) -> dict[str, Any]:
    """The data unmarshaller handed to the SDK: strict JSON, and an object."""
    if raw is None or raw in ("", b""):
        raise EventError("invalid_data", "the event has no data: send a JSON object")
    return _strict_json(raw.encode() if isinstance(raw, str) else raw, "the event's data")


def _strict_json(raw: bytes, what: str) -> dict[str, Any]:
    try:
        return load_json_object(raw)
    except InputError as exc:
        raise EventError(
            "invalid_data", f"{what} is not a JSON object: {exc.message}", **exc.details
        ) from None


def _media(content_type: str | None) -> str:
    return (content_type or "").partition(";")[0].strip().lower()


def _as_bytes(body: str | bytes) -> bytes:
    return body.encode("utf-8") if isinstance(body, str) else body
