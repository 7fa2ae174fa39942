"""`POST /v1/broker`: the embedded broker's ingress in `vwm up` (what ``K_SINK`` points at there).

One CloudEvent per request, binary or structured mode (`eventing.codec.from_http`, at most
`MAX_EVENT_BYTES`). 202 once the event is in the database's queue, also for an event already
queued (same `source` + `id`: acknowledged, not queued twice); the event's 4xx for a bad event;
503 ``broker_unavailable`` when the database does not answer (retry).

The API-key middleware lets this path through (`functions.http.SELF_AUTHENTICATED_PATHS`): who
may post what depends on the event, so it is decided here, after the event is read.

- A harness token (``Authorization: Bearer <t>``, ``t`` the token the control plane derives for
  the event's ``sessionid``) may post only its own session's job events: source
  ``/vwm/harness/<sessionid>``, type ``dev.vwm.job.*``.
- An ``admin`` API key may post any event of the catalogue; a ``client`` key only
  ``dev.vwm.prompt.requested`` and ``dev.vwm.session.end.requested``.
- Anything else is 401 ``unauthorized`` (no credential, or one that is nothing of the above) or
  403 ``forbidden`` (saying what that credential may post). A token is never logged.

A missing or unknown credential is refused before the body is judged, so a stranger learns
nothing about the event it sent. The session id a harness token is checked against is read from
the request before the event is decoded (the ``ce-sessionid`` header, or the structured body's
``sessionid``), and must then be the decoded event's.
"""

from __future__ import annotations

import hmac
import json
import logging

from sqlalchemy.exc import DBAPIError
from starlette.requests import Request
from starlette.responses import Response

from eventing.codec import MAX_EVENT_BYTES, STRUCTURED_CONTENT_TYPE, from_http
from eventing.events import (
    CATALOGUE,
    JOB_COMPLETED,
    JOB_FAILED,
    JOB_OUTPUT,
    JOB_STARTED,
    PROMPT_REQUESTED,
    SESSION_END_REQUESTED,
    EventError,
    VwmEvent,
    harness_source,
)
from eventing.tracing import with_trace
from functions.api import Endpoint
from functions.context import db, lookup_key, token_key
from functions.http import ApiError, read_body

logger = logging.getLogger(__name__)

HARNESS_TYPES = frozenset({JOB_STARTED, JOB_OUTPUT, JOB_COMPLETED, JOB_FAILED})
CLIENT_TYPES = frozenset({PROMPT_REQUESTED, SESSION_END_REQUESTED})
ADMIN_TYPES = frozenset(CATALOGUE)


class _Harness:
    """A caller that presented the harness token of `session_id`."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id


async def post_broker(request: Request) -> Response:
    presented = _bearer(request)
    if not presented:
        raise _unauthorized()
    body = await read_body(request, MAX_EVENT_BYTES)
    caller = await _authenticate(presented, request, body)
    try:
        event = from_http(dict(request.headers), body)
    except EventError as exc:
        raise ApiError(exc.status, exc.code, exc.message, **exc.details) from None
    _authorize(caller, event)
    # An event without the tracing extension goes on in the trace of the request that posted
    # it (its server span continues the poster's traceparent header).
    event = with_trace(event)
    broker = getattr(request.app.state, "broker", None)
    try:
        if broker is not None:
            queued = await broker.enqueue(event)
        else:  # no delivery loop in this process: queue only; a loop elsewhere delivers
            from functions.broker.subscriptions import builtin_subscriptions
            from functions.broker.user_subscriptions import enqueue_routed

            queued = await db(enqueue_routed, event, builtin_subscriptions())
    except DBAPIError:
        logger.warning(
            "the broker could not queue an event: the database did not answer",
            extra={"event_id": event.id, "event_type": event.type},
        )
        raise ApiError(
            503, "broker_unavailable", "the broker's database did not answer; send the event again"
        ) from None
    if not queued:
        logger.info(
            "event already queued: acknowledged",
            extra={"event_id": event.id, "event_source": event.source},
        )
    return Response(status_code=202)


def _bearer(request: Request) -> str:
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    return presented.strip() if scheme.lower() == "bearer" else ""


async def _authenticate(presented: str, request: Request, body: bytes) -> _Harness | str:
    """The harness whose token this is, or the API key's scope; 401 for anything else."""
    session_id = _claimed_session(request, body)
    if session_id and hmac.compare_digest(
        token_key().token(session_id).encode(), presented.encode("utf-8", "replace")
    ):
        return _Harness(session_id)
    try:
        scope = await lookup_key(presented)
    except DBAPIError:
        logger.warning("API key lookup failed: the database did not answer")
        raise ApiError(
            503, "broker_unavailable", "the database did not answer; send the event again"
        ) from None
    if scope is None:
        raise _unauthorized()
    return scope


def _claimed_session(request: Request, body: bytes) -> str | None:
    """The ``sessionid`` the request says the event has, read as `from_http` will read it
    (structured mode: the body; binary mode: the header). None when there is none."""
    media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media == STRUCTURED_CONTENT_TYPE:
        try:
            value = json.loads(body).get("sessionid")
        except (ValueError, AttributeError, RecursionError):
            return None
    else:
        value = request.headers.get("ce-sessionid")
    return value if isinstance(value, str) and value else None


def _authorize(caller: _Harness | str, event: VwmEvent) -> None:
    if isinstance(caller, _Harness):
        own = (
            event.sessionid == caller.session_id
            and event.source == harness_source(caller.session_id)
            and event.type in HARNESS_TYPES
        )
        if not own:
            raise ApiError(
                403,
                "forbidden",
                "a harness token may post only its own session's job events "
                f"(dev.vwm.job.*, source {harness_source(caller.session_id)})",
            )
        return
    allowed = ADMIN_TYPES if caller == "admin" else CLIENT_TYPES
    if event.type not in allowed:
        raise ApiError(
            403,
            "forbidden",
            f"a {caller} API key may post only {', '.join(sorted(allowed))}",
            type=event.type,
        )


def _unauthorized() -> ApiError:
    return ApiError(
        401,
        "unauthorized",
        "send an API key ('Authorization: Bearer vwm_…') or, from a harness, its session token",
    )


ENDPOINTS = [
    Endpoint(
        "POST",
        "/v1/broker",
        post_broker,
        "Publish one CloudEvent to the embedded broker (binary or structured mode); admin and "
        "client keys by event type, harness tokens for their own session's job events",
        status=202,
        other_statuses=(400, 403, 413, 415, 503),
        tags=("broker",),
    ),
]
