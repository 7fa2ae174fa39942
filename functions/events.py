"""The `events` function: where CloudEvents change the control plane's state.

Served alone by functions-framework as a CloudEvent target (`functions.main.events`, behind a
Knative Trigger) and by `vwm up` at `POST /v1/events` (binary or structured mode). Both hand the
decoded `VwmEvent` to `receive`, which answers with an `Outcome`; the edges turn it into 2xx, and
`EventError` (an event never to be accepted) into its 4xx, and `EventsUnavailable` (the database
is down: a retry can fix it) into 503.

Idempotent by the event's `source` + `id` (`vwm.processed_events`, written in the transaction
that applies the event) and by state (`functions.job_log`; a session ends once). Job events are
applied by `functions.job_log`; `dev.vwm.prompt.requested` queues its job
(`functions.prompt_requests.accept`; the delivery to the session's harness runs it);
in Knative mode `accept` also forwards an unsigned request signed, for the session's Trigger;
a request with a wrong signature is refused (`EventError`);
`dev.vwm.session.end.requested` ends the session through `functions.sessions.end`, as
`DELETE /v1/sessions/{id}` does. The other types are acknowledged and logged as not handled
yet (docs/events.md, "The events function").

The control plane's own job events (a `job.failed` for a job it failed itself) are
announcements: the change they report committed with them, so they are acknowledged as they
are. A job event for a job not known here that answers a prompt request (`causationid`) of a
live session is refused with 503: the request that queues the job is being handled, and the
broker's retry finds it.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import TYPE_CHECKING
from weakref import WeakKeyDictionary

from opentelemetry.trace import SpanKind
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from eventing import tracing
from eventing.codec import MAX_EVENT_BYTES, from_http
from eventing.events import (
    CONTROL_PLANE_SOURCE,
    PROMPT_REQUESTED,
    SESSION_END_REQUESTED,
    TICK,
    EndReason,
    EventError,
    SessionEndRequested,
    VwmEvent,
)
from functions.api import Endpoint
from functions.context import db, services, settings
from functions.db.errors import ConflictError, NotFoundError
from functions.db.group_commit import GroupCommit, each
from functions.db.models import ProcessedEvent, WorkerSession
from functions.errors import FunctionsError
from functions.http import ApiError, read_body
from functions.job_log import JOB_TYPES, apply
from functions.prompt_requests import accept

if TYPE_CHECKING:
    from functions.services import Services

logger = logging.getLogger(__name__)
TRACER = "vwm.control_plane"


class Outcome(StrEnum):
    HANDLED = "handled"  # state changed (or was already as the event says)
    DUPLICATE = "duplicate"  # this source + id was handled before
    UNKNOWN = "unknown"  # its job or session does not exist here: acknowledged, logged
    NOT_HANDLED = "not_handled"  # a catalogue type no handler consumes yet


class EventsUnavailable(FunctionsError):
    """The event could not be applied for a reason a retry can fix (the database)."""

    code = "events_unavailable"
    status = 503
    retryable = True

    def __init__(self, message: str) -> None:
        super().__init__(message)


async def receive(event: VwmEvent) -> Outcome:
    """Apply one event. Raises `EventError` for one that is never to be accepted,
    `EventsUnavailable` when a retry may succeed. Traced as a CONSUMER span ``process {type}``
    in the trace the event carries (docs/tracing.md)."""
    attributes = {
        "messaging.operation.type": "process",
        "cloudevents.event_id": event.id,
        "cloudevents.event_source": event.source,
        "cloudevents.event_type": event.type,
    }
    if event.sessionid:
        attributes["gen_ai.conversation.id"] = event.sessionid
    if event.jobid:
        attributes["vwm.job.id"] = event.jobid
    with (
        tracing.continuing(event),
        tracing.tracer(TRACER).start_as_current_span(
            f"process {event.type}", kind=SpanKind.CONSUMER, attributes=attributes
        ) as span,
    ):
        outcome = await _receive(event)
        span.set_attribute("vwm.event.outcome", outcome.value)
        return outcome


async def _receive(event: VwmEvent) -> Outcome:
    context = {"event_type": event.type, "event_id": event.id, "event_source": event.source}
    try:
        if event.type in JOB_TYPES:
            outcome = await _recorder().submit(event)
        elif event.type == PROMPT_REQUESTED:
            outcome = await db(_accept_prompt, event)
        elif event.type == SESSION_END_REQUESTED:
            outcome = await _end_session(event)
        elif event.type == TICK:
            outcome = await _tick()
        else:
            outcome = Outcome.NOT_HANDLED
    except IntegrityError:
        # A concurrent delivery of the same event (or of an overlapping batch) wrote first;
        # retried, this one finds it handled.
        raise EventsUnavailable("a concurrent delivery is being recorded; retry") from None
    except DBAPIError as exc:
        logger.warning("the database failed while applying an event", extra=context)
        cause = type(exc.orig).__name__
        raise EventsUnavailable(f"the database is unavailable ({cause}); retry") from None
    if outcome is Outcome.HANDLED:
        logger.info("event handled", extra=context)
    elif outcome is Outcome.UNKNOWN:
        # Acknowledged, not refused: Knative retries a 404, and a job or session unknown now
        # stays unknown (the control plane creates them before any harness publishes).
        logger.warning("event for an unknown job or session: acknowledged, ignored", extra=context)
    elif outcome is Outcome.NOT_HANDLED:
        logger.info("event type not handled yet: acknowledged", extra=context)
    return outcome


# Job events delivered at once (every streaming harness's) are recorded in shared transactions:
# one group commit per app's `Services`, so an app never writes into another's database.
_recorders: WeakKeyDictionary[Services, GroupCommit[VwmEvent, Outcome]] = WeakKeyDictionary()


def _recorder() -> GroupCommit[VwmEvent, Outcome]:
    bound_services = services()
    recorder = _recorders.get(bound_services)
    if recorder is None:
        recorder = _recorders[bound_services] = GroupCommit(
            bound_services.db, each(_apply_job_event)
        )
    return recorder


def _apply_job_event(session: Session, event: VwmEvent) -> Outcome:
    if event.source == CONTROL_PLANE_SOURCE:
        return Outcome.HANDLED  # ours: written with the change it announces
    if _seen(session, event):
        return Outcome.DUPLICATE
    if not apply(session, event, settings().raw_output_limit):
        if event.causationid and _session_is_live(session, event.sessionid):
            raise EventsUnavailable(
                f"job {event.jobid} is not known yet: the prompt request that queues it is "
                "being handled; retry"
            )
        return Outcome.UNKNOWN  # nothing written, not even the id
    _mark(session, event)
    return Outcome.HANDLED


def _accept_prompt(session: Session, event: VwmEvent) -> Outcome:
    if _seen(session, event):
        return Outcome.DUPLICATE
    accept(session, event)  # a request for no session is answered (job.failed) all the same
    _mark(session, event)
    return Outcome.HANDLED


def _session_is_live(session: Session, session_id: str | None) -> bool:
    row = session.get(WorkerSession, session_id) if session_id else None
    return row is not None and row.status not in ("ended", "failed")


async def _end_session(event: VwmEvent) -> Outcome:
    """Ending takes as long as the harness's shutdown, so it runs outside one transaction: the
    id is checked first and marked after. A redelivery meanwhile finds the session `ending` (a
    conflict, acknowledged) or `ended` (a no-op)."""
    from functions.sessions import end

    if await db(_seen, event):
        return Outcome.DUPLICATE
    session_id = str(event.sessionid)
    requested = event.data if isinstance(event.data, SessionEndRequested) else None
    reason = requested.reason if requested else EndReason.REQUESTED
    try:
        _, saved = await end(session_id, reason, learn=requested.learn if requested else True)
    except NotFoundError:
        return Outcome.UNKNOWN
    except ConflictError:  # already ending, on another delivery or a DELETE
        logger.info("session already ending", extra={"session_id": session_id})
        return Outcome.DUPLICATE
    if not saved:
        # Failed with a reason on the session row; ending again (DELETE) retries the push.
        logger.warning(
            "the session ended without saving its work", extra={"session_id": session_id}
        )
    await db(_mark_once, event)
    return Outcome.HANDLED


async def _tick() -> Outcome:
    """Reconcile (`functions.reconcile`). Not recorded in `vwm.processed_events`: a tick says
    "look now", so a redelivered one just looks again, which changes nothing that is right."""
    from functions.context import services
    from functions.outbox_relay import drain_on_tick
    from functions.reconcile import reconcile

    await drain_on_tick(services().outbox_relay)  # scaled to zero, no relay may be up: drain
    await reconcile()
    return Outcome.HANDLED


def _seen(session: Session, event: VwmEvent) -> bool:
    return session.get(ProcessedEvent, (event.source, event.id)) is not None


def _mark(session: Session, event: VwmEvent) -> None:
    session.add(ProcessedEvent(source=event.source, id=event.id, type=event.type))
    session.flush()


def _mark_once(session: Session, event: VwmEvent) -> None:
    if not _seen(session, event):
        _mark(session, event)


# -- the edges ---------------------------------------------------------------------------------


def answer(outcome: Outcome) -> Response:
    """2xx with no body: a body with `ce-*` headers would be a reply event to Knative."""
    return Response(status_code=202 if outcome is Outcome.HANDLED else 200)


def refusal(exc: EventError | EventsUnavailable) -> ApiError:
    """Either refusal as the HTTP answer it states: an `EventError`'s 4xx (never retried) or
    `EventsUnavailable`'s 503 (retried)."""
    return ApiError(exc.status, exc.code, exc.message, **exc.details)


async def post_event(request: Request) -> Response:
    """`POST /v1/events` in `vwm up`: one CloudEvent, binary or structured mode."""
    body = await read_body(request, MAX_EVENT_BYTES)
    try:
        return answer(await receive(from_http(dict(request.headers), body)))
    except (EventError, EventsUnavailable) as exc:
        raise refusal(exc) from None


ENDPOINTS = [
    Endpoint(
        "POST",
        "/v1/events",
        post_event,
        "Deliver one CloudEvent (binary or structured mode); admin keys only",
        status=202,
        other_statuses=(200, 403, 413, 415, 422, 503),
        tags=("events",),
    ),
]
