"""The `subscriptions` function: other services subscribe to VWM's CloudEvents (client scope).

``POST /v1/subscriptions {name, filters, sink, delivery?}`` stores a subscription in
`vwm.subscriptions`: Knative Trigger ``filters`` (a list, ANDed), an http(s) `sink` under the
URL policy of `functions.sink_policy`, and an optional Knative ``delivery`` spec (retry,
backoffPolicy, backoffDelay, timeout, deadLetterSink). In `vwm up` the embedded broker routes
every event enqueued after the creation commits to it, in order per subscription
(`functions.broker.user_subscriptions`). With ``VWM_EVENTING=knative`` (production) the call
also makes the subscription's Knative Trigger (`functions.broker.knative_triggers`), after the
row commits; when that fails the row is deleted again and the caller gets the error (503
``kubernetes_unavailable`` when the API server did not answer), so a subscription exists only
with its Trigger. ``GET`` lists or reads them; ``DELETE`` removes one (its Trigger first, then
the row) and drops the deliveries still pending to it. docs/events.md, "Subscribing";
docs/broker.md, "Subscriptions in production".
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any

from pydantic import ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from eventing.lazy_models import LazyModel
from functions.api import Endpoint
from functions.broker import knative_triggers
from functions.broker.subscriptions import CONTROL_PLANE
from functions.broker.user_subscriptions import parse_spec, remove
from functions.context import db, settings
from functions.db.models import UserSubscription
from functions.http import ApiError, parse_body
from functions.repo_policy import allow_local_repos
from functions.sink_policy import MAX_URL_CHARS, check_sink_url

log = logging.getLogger(__name__)

# A DNS-1123 label, as a Trigger's name is.
NAME = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
MAX_FILTERS = 50
RESERVED_NAMES = frozenset({CONTROL_PLANE})
# Filters and delivery are parsed again on every enqueue: bounded well below the body limit.
MAX_SPEC_CHARS = 65_536


class SubscriptionIn(LazyModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME, max_length=63)
    filters: list[dict[str, Any]] = Field(max_length=MAX_FILTERS)
    sink: str = Field(min_length=1, max_length=MAX_URL_CHARS)
    delivery: dict[str, Any] | None = None


class SubscriptionOut(LazyModel):
    name: str
    filters: list[dict[str, Any]]
    sink: str
    delivery: dict[str, Any] | None
    created_by: str
    created_at: datetime


class SubscriptionList(LazyModel):
    items: list[SubscriptionOut]


def subscription_out(row: UserSubscription) -> dict[str, Any]:
    return SubscriptionOut(
        name=row.name,
        filters=row.filters,
        sink=row.sink,
        delivery=row.delivery,
        created_by=row.created_by,
        created_at=row.created_at,
    ).model_dump(mode="json")


def _exists(name: str) -> ApiError:
    return ApiError(
        409,
        "subscription_exists",
        f"a subscription named {name!r} exists; pick another name, or DELETE "
        f"/v1/subscriptions/{name} first",
    )


def _not_found(name: str) -> ApiError:
    return ApiError(404, "subscription_not_found", f"no subscription named {name!r}")


def _get(session: Session, name: str) -> UserSubscription:
    row = session.scalar(select(UserSubscription).where(UserSubscription.name == name))
    if row is None:
        raise _not_found(name)
    return row


async def create_subscription(request: Request) -> Response:
    body = await parse_body(request, SubscriptionIn, settings().max_request_bytes)
    if body.name in RESERVED_NAMES:
        raise _exists(body.name)
    spec_chars = len(json.dumps({"filters": body.filters, "delivery": body.delivery}))
    if spec_chars > MAX_SPEC_CHARS:
        raise ApiError(
            422,
            "subscription_too_large",
            f"filters and delivery take {spec_chars} characters of JSON, more than "
            f"{MAX_SPEC_CHARS}; filter on fewer values",
        )
    _, policy = parse_spec(body.filters, body.delivery)  # InvalidSpec: 422 with its path
    scope = getattr(request.state, "key_scope", "client")

    def create(session: Session) -> dict[str, Any]:
        allow_local = allow_local_repos(session, settings().allow_local_repos)
        check_sink_url(body.sink, allow_local=allow_local, what="sink")
        if policy.dead_letter_sink is not None:
            check_sink_url(
                str(policy.dead_letter_sink),
                allow_local=allow_local,
                what="delivery.deadLetterSink",
            )
        row = UserSubscription(
            name=body.name,
            filters=body.filters,
            sink=body.sink,
            delivery=body.delivery,
            created_by=scope,
        )
        try:
            with session.begin_nested():  # a concurrent create of the same name may win
                session.add(row)
                session.flush()
        except IntegrityError:
            raise _exists(body.name) from None
        return subscription_out(row)

    made = await db(create)
    if _on_knative():
        await _apply_trigger_or_undo(body)
    return JSONResponse(made, status_code=201)


def _on_knative() -> bool:
    return settings().eventing == "knative"


async def _apply_trigger_or_undo(subscription: SubscriptionIn) -> None:
    """Make the Trigger of the subscription just stored; if that fails, remove the row again
    (a subscription without its Trigger would never be delivered to) and raise the error."""
    name = subscription.name
    try:
        await knative_triggers.apply_trigger(subscription)
    except BaseException:
        try:  # a call that timed out may still have made it
            await knative_triggers.delete_trigger(name)
        except Exception:
            log.warning(
                "a Trigger may be left for a subscription that was not made; list_triggers "
                "shows it",
                extra={"subscription": name},
            )
        try:
            await db(lambda s: remove(s, name))
        except Exception:
            log.exception(
                "a subscription whose Trigger could not be made is still stored; delete it",
                extra={"subscription": name},
            )
        raise


async def list_subscriptions(_: Request) -> Response:
    def rows(session: Session) -> list[dict[str, Any]]:
        found = session.scalars(select(UserSubscription).order_by(UserSubscription.name))
        return [subscription_out(row) for row in found]

    return JSONResponse({"items": await db(rows)})


async def get_subscription(request: Request) -> Response:
    name = request.path_params["name"]
    return JSONResponse(await db(lambda s: subscription_out(_get(s, name))))


async def delete_subscription(request: Request) -> Response:
    name = request.path_params["name"]
    if _on_knative():
        await db(lambda s: _get(s, name))  # 404 before touching the cluster
        await knative_triggers.delete_trigger(name)  # before the row: a failure leaves both

    def delete(session: Session) -> None:
        if not remove(session, name):
            raise _not_found(name)

    await db(delete)
    return Response(status_code=204)


TAGS = ("subscriptions",)
ENDPOINTS = [
    Endpoint(
        "POST",
        "/v1/subscriptions",
        create_subscription,
        "Subscribe a sink to VWM's CloudEvents (Knative filters, optional delivery spec)",
        body=SubscriptionIn,
        response=SubscriptionOut,
        status=201,
        other_statuses=(409, 502, 503),  # 502, 503: the Trigger (VWM_EVENTING=knative)
        tags=TAGS,
    ),
    Endpoint(
        "GET",
        "/v1/subscriptions",
        list_subscriptions,
        "List subscriptions",
        response=SubscriptionList,
        tags=TAGS,
    ),
    Endpoint(
        "GET",
        "/v1/subscriptions/{name}",
        get_subscription,
        "Get a subscription",
        response=SubscriptionOut,
        tags=TAGS,
    ),
    Endpoint(
        "DELETE",
        "/v1/subscriptions/{name}",
        delete_subscription,
        "Delete a subscription; deliveries still pending to it are dropped",
        status=204,
        other_statuses=(502, 503),  # its Trigger could not be deleted (VWM_EVENTING=knative)
        tags=TAGS,
    ),
]
