"""User subscriptions (``POST /v1/subscriptions``, table `vwm.subscriptions`) as the embedded
broker routes to them.

The broker reads the table where it needs the list, in the transaction that needs it: each
enqueue (so a subscription gets every event enqueued after its creation commits, and none after
its deletion), each claim of the delivery loop (the sinks of what it claimed) and each settle
that queues a reply. Nothing is cached across transactions: the table is small, and a cache
would need invalidation across every process that shares the database.

A user subscription is `ordered` (its deliveries go one at a time, oldest first:
`functions.broker.queue.claim_due`) and delivered by `HttpSink` with its ``delivery`` spec, or
`USER_DEFAULT` when it gives none. A row that no longer parses (written by an older version) is
logged and skipped, never fatal to the broker.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from eventing.events import VwmEvent
from functions.broker.delivery import DeliveryPolicy, parse_delivery
from functions.broker.errors import InvalidSpec
from functions.broker.filters import TriggerFilter, parse_trigger_filter
from functions.broker.outbox import drain_to_queue
from functions.broker.queue import Route, enqueue
from functions.broker.subscriptions import HttpSink, Subscription
from functions.db.models import BrokerDelivery, BrokerDeliveryState, UserSubscription

log = logging.getLogger(__name__)

# What a user subscription without a ``delivery`` spec gets (docs/events.md, "Subscribing").
USER_DEFAULT = DeliveryPolicy(
    retry=10, backoff_policy="exponential", backoff_delay=timedelta(milliseconds=500)
)


@dataclass(frozen=True)
class UserRoute:
    """A user subscription as `enqueue` needs it: a name and a filter."""

    name: str
    filter: TriggerFilter


def parse_spec(filters: Any, delivery: Any) -> tuple[TriggerFilter, DeliveryPolicy]:
    """A subscription's filter and policy. Raises `InvalidSpec` (its `path` names the field)."""
    trigger_filter = parse_trigger_filter({"filters": filters})
    return trigger_filter, parse_delivery(delivery, default=USER_DEFAULT)


def _rows(session: Session) -> list[UserSubscription]:
    return list(session.scalars(select(UserSubscription).order_by(UserSubscription.name)))


def _parsed(row: UserSubscription) -> tuple[TriggerFilter, DeliveryPolicy] | None:
    try:
        return parse_spec(row.filters, row.delivery)
    except InvalidSpec as exc:
        log.error(
            "a stored subscription cannot be used: skipped; delete and create it again",
            extra={"subscription": row.name, "code": exc.code, "reason": exc.message[:500]},
        )
        return None


def user_routes(session: Session) -> list[UserRoute]:
    routes = []
    for row in _rows(session):
        parsed = _parsed(row)
        if parsed is not None:
            routes.append(UserRoute(row.name, parsed[0]))
    return routes


def user_subscriptions(session: Session, client: httpx.AsyncClient) -> list[Subscription]:
    """Every usable user subscription, its sink an `HttpSink` on `client`."""
    found = []
    for row in _rows(session):
        parsed = _parsed(row)
        if parsed is None:
            continue
        trigger_filter, policy = parsed
        sink = HttpSink.for_policy(row.sink, client, policy)
        found.append(Subscription(row.name, trigger_filter, sink, policy, ordered=True))
    return found


def all_routes(session: Session, builtins: Sequence[Route]) -> list[Route]:
    """`builtins`, then the user subscriptions as they are in this transaction."""
    return [*builtins, *user_routes(session)]


def enqueue_routed(session: Session, event: VwmEvent, builtins: Sequence[Route]) -> bool:
    """`functions.broker.queue.enqueue` to `builtins` and the user subscriptions."""
    return enqueue(session, event, all_routes(session, builtins))


def drain_routed(session: Session, builtins: Sequence[Route], limit: int = 100) -> int:
    """`functions.broker.outbox.drain_to_queue` to `builtins` and the user subscriptions."""
    return drain_to_queue(session, all_routes(session, builtins), limit)


def remove(session: Session, name: str) -> bool:
    """Delete user subscription `name` and the deliveries still pending to it (nobody is left
    to deliver them to: dropped, not kept as dead letters). False when there is none."""
    row = session.scalar(select(UserSubscription).where(UserSubscription.name == name))
    if row is None:
        return False
    session.delete(row)
    session.execute(
        delete(BrokerDelivery).where(
            BrokerDelivery.subscription == name,
            BrokerDelivery.state == BrokerDeliveryState.PENDING,
        )
    )
    return True
