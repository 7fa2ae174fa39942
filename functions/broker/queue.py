"""The embedded broker's queue in the database: plain synchronous functions on a SQLAlchemy
`Session`, each run by its caller inside one transaction (`functions.context.db`, or `run_in`
with a session factory of its own). Tables: `vwm.broker_events`, `vwm.broker_deliveries`
(`functions.db.models`, migration 0007).

- `enqueue` stores an event once per (`source`, `id`) and one pending delivery per subscription
  whose filter matches it (the match is decided at ingress, as a Knative Broker fans out).
- `claim_due` leases due deliveries to one delivery loop (PostgreSQL: ``FOR UPDATE SKIP
  LOCKED``, so two processes never take the same row; SQLite: its transactions take the write
  lock at ``BEGIN IMMEDIATE``, which serializes claims), oldest event first.
- `mark_delivered`, `schedule_retry`, `mark_dead` record how an attempt ended; `renew_leases`
  keeps a long delivery's rows its own; `release` gives rows back at a clean stop.
- `prune` deletes what is settled after the retention; `dead_letters` and `counts` are for
  operators (docs/broker.md).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

import anyio.to_thread
from sqlalchemy import delete, exists, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased, sessionmaker

from eventing import codec
from eventing.events import VwmEvent
from functions.broker.filters import TriggerFilter
from functions.db.columns import utcnow
from functions.db.engine import transaction
from functions.db.models import BrokerDelivery, BrokerDeliveryState, BrokerEvent

# What a delivery row keeps of the last answer: enough to see why, bounded.
MAX_ANSWER_CHARS = 4096
_STRUCTURED = {"content-type": codec.STRUCTURED_CONTENT_TYPE}

T = TypeVar("T")


class Run(Protocol):
    """Runs `fn(session, *args)` in one transaction in a worker thread and returns its result:
    `functions.context.db` in `vwm up`, `run_in(factory)` anywhere else."""

    async def __call__(self, fn: Callable[..., T], *args: Any) -> T: ...


def run_in(factory: sessionmaker[Session]) -> Run:
    """A `Run` on `factory`'s database (tests, tools): one transaction per call."""

    async def run(fn: Callable[..., T], *args: Any) -> T:
        def unit_of_work() -> T:
            with transaction(factory) as session:
                return fn(session, *args)

        return await anyio.to_thread.run_sync(unit_of_work)

    return run


class Route(Protocol):
    """What `enqueue` needs of a subscription: its name and its filter."""

    @property
    def name(self) -> str: ...

    @property
    def filter(self) -> TriggerFilter: ...


@dataclass(frozen=True)
class Claimed:
    """A delivery leased to the caller until `leased_until`. `attempts` counts this one."""

    delivery_id: int
    event_seq: int
    subscription: str
    attempts: int
    event: VwmEvent
    leased_until: datetime


@dataclass(frozen=True)
class DeadDelivery:
    """A dead letter as the queue keeps it: the event, whose it was, and the last answer."""

    delivery_id: int
    subscription: str
    event: VwmEvent
    attempts: int
    last_status: int | None
    last_answer: str
    at: datetime


def filter_view(event: VwmEvent) -> dict[str, str]:
    """The event as a Trigger filter sees it: context attributes and extensions as strings
    (``seq`` in decimal, ``time`` in RFC 3339), never data."""
    return {name: str(value) for name, value in event.attributes().items()}


def encode(event: VwmEvent) -> str:
    """The event in structured-mode JSON, as `eventing.codec` writes it."""
    return codec.to_structured(event)[1].decode("utf-8")


def decode(body: str) -> VwmEvent:
    return codec.from_http(_STRUCTURED, body.encode("utf-8"))


def enqueue(
    session: Session,
    event: VwmEvent,
    subscriptions: Sequence[Route],
    now: datetime | None = None,
) -> bool:
    """Store `event` with a pending delivery per matching subscription, due now. False, and
    nothing written, when its (`source`, `id`) is already queued (or was, within the
    retention): a re-post is acknowledged, not delivered twice."""
    now = now or utcnow()
    if _queued(session, event):
        return False
    row = BrokerEvent(
        source=event.source, id=event.id, type=event.type, body=encode(event), received_at=now
    )
    try:
        with session.begin_nested():  # a concurrent post of the same event may win the insert
            session.add(row)
            session.flush()
    except IntegrityError:
        return False
    view = filter_view(event)
    for subscription in subscriptions:
        if subscription.filter.matches(view):
            session.add(
                BrokerDelivery(
                    event_seq=row.seq,
                    subscription=subscription.name,
                    state=BrokerDeliveryState.PENDING,
                    attempts=0,
                    next_attempt_at=now,
                    created_at=now,
                    updated_at=now,
                )
            )
    session.flush()
    return True


def _queued(session: Session, event: VwmEvent) -> bool:
    found = session.scalar(
        select(BrokerEvent.seq).where(
            BrokerEvent.source == event.source, BrokerEvent.id == event.id
        )
    )
    return found is not None


def claim_due(
    session: Session,
    limit: int,
    lease_s: float,
    now: datetime,
    concurrent: Collection[str] | None = None,
    *,
    only: Collection[str] | None = None,
    exclude: Collection[str] = (),
) -> list[Claimed]:
    """Lease up to `limit` pending deliveries that are due and not leased to a live loop, oldest
    event first, to the caller for `lease_s` seconds; each claim counts as an attempt.

    `concurrent`: the subscriptions whose deliveries may be claimed side by side. Every other
    subscription is ordered: only its oldest pending delivery can be claimed, so the next one
    waits while it is in flight (leased) or waiting for a retry (FIFO per subscription, whatever
    the number of loops: the pending row blocks on both SQLite and PostgreSQL). None: all
    subscriptions are concurrent. `only` / `exclude`: the subscriptions this loop claims for
    (None: all) and those it leaves to another loop."""
    if limit <= 0:
        return []
    conditions = [
        BrokerDelivery.state == BrokerDeliveryState.PENDING,
        BrokerDelivery.next_attempt_at <= now,
        (BrokerDelivery.leased_until.is_(None)) | (BrokerDelivery.leased_until <= now),
    ]
    if only is not None:
        conditions.append(BrokerDelivery.subscription.in_(list(only)))
    if exclude:
        conditions.append(BrokerDelivery.subscription.not_in(list(exclude)))
    if concurrent is not None:
        earlier = aliased(BrokerDelivery)
        waits_for_earlier = exists().where(
            earlier.subscription == BrokerDelivery.subscription,
            earlier.state == BrokerDeliveryState.PENDING,
            earlier.event_seq < BrokerDelivery.event_seq,
        )
        conditions.append(BrokerDelivery.subscription.in_(list(concurrent)) | ~waits_for_earlier)
    query = (
        select(BrokerDelivery)
        .where(*conditions)
        .order_by(BrokerDelivery.event_seq, BrokerDelivery.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    rows = list(session.scalars(query))
    if not rows:
        return []
    until = now + timedelta(seconds=lease_s)
    found = session.execute(
        select(BrokerEvent.seq, BrokerEvent.body).where(
            BrokerEvent.seq.in_({row.event_seq for row in rows})
        )
    )
    bodies = {seq: body for seq, body in found}
    claimed = []
    for row in rows:
        row.leased_until = until
        row.attempts += 1
        row.updated_at = now
        claimed.append(
            Claimed(
                row.id,
                row.event_seq,
                row.subscription,
                row.attempts,
                decode(bodies[row.event_seq]),
                until,
            )
        )
    session.flush()
    return claimed


def renew_leases(session: Session, delivery_ids: Sequence[int], until: datetime) -> None:
    """Extend the lease of deliveries still in flight (a slow subscriber is not a dead loop)."""
    if delivery_ids:
        session.execute(
            update(BrokerDelivery)
            .where(
                BrokerDelivery.id.in_(delivery_ids),
                BrokerDelivery.state == BrokerDeliveryState.PENDING,
            )
            .values(leased_until=until)
        )


def release(session: Session, delivery_ids: Sequence[int], now: datetime | None = None) -> None:
    """Give leased deliveries back, due at once and their cut-off attempt not counted (a clean
    stop: the next loop delivers them without waiting for the lease to expire)."""
    if delivery_ids:
        session.execute(
            update(BrokerDelivery)
            .where(
                BrokerDelivery.id.in_(delivery_ids),
                BrokerDelivery.state == BrokerDeliveryState.PENDING,
                BrokerDelivery.attempts > 0,
            )
            .values(
                leased_until=None,
                attempts=BrokerDelivery.attempts - 1,
                updated_at=now or utcnow(),
            )
        )


def mark_delivered(
    session: Session, delivery_id: int, status: int | None, now: datetime | None = None
) -> None:
    _settle(session, delivery_id, BrokerDeliveryState.DELIVERED, status, None, now)


def schedule_retry(
    session: Session,
    delivery_id: int,
    at: datetime,
    status: int | None,
    answer: str,
    now: datetime | None = None,
) -> None:
    """Due again at `at`, with the answer that made the attempt fail."""
    session.execute(
        update(BrokerDelivery)
        .where(
            BrokerDelivery.id == delivery_id,
            BrokerDelivery.state == BrokerDeliveryState.PENDING,
        )
        .values(
            next_attempt_at=at,
            leased_until=None,
            last_status=status,
            last_answer=answer[:MAX_ANSWER_CHARS],
            updated_at=now or utcnow(),
        )
    )


def mark_dead(
    session: Session,
    delivery_id: int,
    status: int | None,
    answer: str,
    now: datetime | None = None,
) -> None:
    """Retries used up or refused: kept as a dead letter with the last answer."""
    _settle(session, delivery_id, BrokerDeliveryState.DEAD, status, answer, now)


def _settle(
    session: Session,
    delivery_id: int,
    state: BrokerDeliveryState,
    status: int | None,
    answer: str | None,
    now: datetime | None,
) -> None:
    # Only a pending row settles: a copy delivered twice (an expired lease) records once.
    session.execute(
        update(BrokerDelivery)
        .where(
            BrokerDelivery.id == delivery_id,
            BrokerDelivery.state == BrokerDeliveryState.PENDING,
        )
        .values(
            state=state,
            leased_until=None,
            last_status=status,
            last_answer=None if answer is None else answer[:MAX_ANSWER_CHARS],
            updated_at=now or utcnow(),
        )
    )


def prune(session: Session, older_than: datetime) -> int:
    """Delete deliveries delivered before `older_than`, then events received before it that
    no delivery row points at any more (pending and dead ones keep their event). Returns how
    many events went. An event pruned can be queued again if it is posted again."""
    session.execute(
        delete(BrokerDelivery).where(
            BrokerDelivery.state == BrokerDeliveryState.DELIVERED,
            BrokerDelivery.updated_at < older_than,
        )
    )
    referenced = exists().where(BrokerDelivery.event_seq == BrokerEvent.seq)
    result = session.execute(
        delete(BrokerEvent).where(BrokerEvent.received_at < older_than, ~referenced)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def dead_letters(session: Session, limit: int = 100) -> list[DeadDelivery]:
    """The newest dead deliveries first."""
    rows = session.execute(
        select(BrokerDelivery, BrokerEvent.body)
        .join(BrokerEvent, BrokerEvent.seq == BrokerDelivery.event_seq)
        .where(BrokerDelivery.state == BrokerDeliveryState.DEAD)
        .order_by(BrokerDelivery.updated_at.desc(), BrokerDelivery.id.desc())
        .limit(limit)
    )
    return [
        DeadDelivery(
            row.id,
            row.subscription,
            decode(body),
            row.attempts,
            row.last_status,
            row.last_answer or "",
            row.updated_at,
        )
        for row, body in rows
    ]


def counts(session: Session) -> dict[str, int]:
    """Deliveries by state (every state present, 0 when none) and ``events`` stored."""
    by_state = session.execute(
        select(BrokerDelivery.state, func.count()).group_by(BrokerDelivery.state)
    )
    found: Mapping[str, int] = {state: count for state, count in by_state}
    result = {state.value: int(found.get(state.value, 0)) for state in BrokerDeliveryState}
    result["events"] = int(session.scalar(select(func.count()).select_from(BrokerEvent)) or 0)
    return result
