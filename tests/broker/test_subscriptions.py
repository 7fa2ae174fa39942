"""User subscriptions in the embedded broker (`functions.broker.user_subscriptions`), on a real
database (PostgreSQL and SQLite) with real HTTP sinks on local ports: routing from the table,
FIFO per ordered subscription (`claim_due`), a sink that is down for a while, one that never
comes back (dead-letter sink), and a deleted subscription."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session, sessionmaker
from starlette.requests import Request
from starlette.responses import Response

from eventing import codec
from eventing.events import VwmEvent
from functions.broker import queue
from functions.broker.service import BrokerService, BrokerSettings
from functions.broker.user_subscriptions import all_routes, remove, user_subscriptions
from functions.db.models import UserSubscription
from tests.broker.events import OTHER_SESSION, SESSION, end_requested, job_started
from tests.support.event_sink import Sink, serving

FAST = BrokerSettings(poll_s=0.05, concurrency=8, lease_s=30, tick_s=0)
QUICK_RETRIES = {"retry": 20, "backoffPolicy": "linear", "backoffDelay": "PT0.05S"}
ONE_SESSION_STARTS = [
    {"exact": {"type": "dev.vwm.job.started"}},
    {"exact": {"sessionid": SESSION}},
]
NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def subscribe(
    factory: sessionmaker[Session],
    name: str,
    sink: str,
    filters: list[dict[str, Any]] | None = None,
    delivery: dict[str, Any] | None = None,
) -> None:
    with factory() as session, session.begin():
        session.add(
            UserSubscription(
                name=name,
                filters=ONE_SESSION_STARTS if filters is None else filters,
                sink=sink,
                delivery=delivery,
                created_by="client",
            )
        )


@asynccontextmanager
async def broker(factory: sessionmaker[Session]) -> AsyncIterator[BrokerService]:
    service = BrokerService(queue.run_in(factory), subscriptions=[], settings=FAST)
    await service.start()
    try:
        yield service
    finally:
        await service.stop(grace_s=1)


async def wait_for(check: Callable[[], bool | Awaitable[bool]], within: float = 20) -> None:
    async with asyncio.timeout(within):
        while True:
            result = check()
            if result if isinstance(result, bool) else await result:
                return
            await asyncio.sleep(0.02)


def seqs(events: list[VwmEvent]) -> list[int | None]:
    return [event.seq for event in events]


async def test_an_ordered_subscription_gets_its_events_in_order_through_an_outage(
    factory: sessionmaker[Session],
) -> None:
    """The sink answers 503 to the first five attempts: the first event is retried and no later
    one is sent before it is taken; then all come, in order, with nothing missing."""
    sink = Sink()
    sink.answers.extend([503] * 5)
    async with serving(sink) as server, broker(factory) as service:
        subscribe(factory, "watcher", server.url, delivery=QUICK_RETRIES)
        for seq in range(1, 13):
            await service.enqueue(job_started(seq))
        await service.enqueue(job_started(1, session=OTHER_SESSION, job="9" * 32))  # filtered
        await wait_for(lambda: len(sink.accepted) == 12)
        await asyncio.sleep(0.2)  # nothing more comes
    assert seqs(sink.accepted) == list(range(1, 13))
    assert [arrival.event.seq for arrival in sink.arrivals[:6]] == [1] * 6  # the head waited
    assert len(sink.arrivals) == 12 + 5


async def test_a_sink_that_never_comes_back_sends_the_events_to_the_dead_letter_sink(
    factory: sessionmaker[Session],
) -> None:
    sink, dead = Sink(), Sink()
    sink.answers.extend([503] * 100)
    async with serving(sink) as server, serving(dead) as dead_server, broker(factory) as service:
        delivery = {**QUICK_RETRIES, "retry": 1, "deadLetterSink": dead_server.url}
        subscribe(factory, "gone", server.url, delivery=delivery)
        for seq in range(1, 4):
            await service.enqueue(job_started(seq))
        await wait_for(lambda: len(dead.accepted) == 3)

        async def all_dead() -> bool:
            return (await service.status())["dead"] == 3

        await wait_for(all_dead)
        status = await service.status()
    assert seqs(dead.accepted) == [1, 2, 3]
    assert sink.accepted == []
    assert status["dead"] == 3 and status["pending"] == 0


async def test_a_subscription_gets_what_is_enqueued_after_it_is_made_and_nothing_once_deleted(
    factory: sessionmaker[Session],
) -> None:
    sink = Sink()
    async with serving(sink) as server, broker(factory) as service:
        await service.enqueue(job_started(1))  # before the subscription: not for it
        subscribe(factory, "late", server.url, delivery=QUICK_RETRIES)
        await service.enqueue(job_started(2))
        await wait_for(lambda: seqs(sink.accepted) == [2])
        with factory() as session, session.begin():
            assert remove(session, "late") is True
            assert remove(session, "late") is False
        await service.enqueue(job_started(3))
        await asyncio.sleep(0.3)
        status = await service.status()
    assert seqs(sink.accepted) == [2]
    assert status["pending"] == 0


async def test_deleting_a_subscription_drops_its_pending_deliveries(
    factory: sessionmaker[Session],
) -> None:
    run = queue.run_in(factory)
    subscribe(factory, "held", "http://127.0.0.1:9/")
    with factory() as session, session.begin():
        routes = all_routes(session, [])
        assert [route.name for route in routes] == ["held"]
    for seq in (1, 2):
        await run(queue.enqueue, job_started(seq), routes)
    with factory() as session, session.begin():
        remove(session, "held")
    assert (await run(queue.counts))["pending"] == 0


def test_claim_due_is_fifo_per_ordered_subscription(factory: sessionmaker[Session]) -> None:
    """`ordered` waits for its oldest pending delivery (in flight or due later); `loose` (in
    `concurrent`) is claimed side by side; a settled head (delivered or dead) lets the next go."""
    subscribe(factory, "ordered", "http://127.0.0.1:9/")
    subscribe(factory, "loose", "http://127.0.0.1:9/")

    def claim(lease_s: float = 30, at: datetime = NOW) -> list[tuple[str, int | None]]:
        with factory() as session, session.begin():
            claimed = queue.claim_due(session, 10, lease_s, at, concurrent={"loose"})
            return [(item.subscription, item.event.seq) for item in claimed]

    with factory() as session, session.begin():
        routes = all_routes(session, [])
        for seq in (1, 2, 3):
            queue.enqueue(session, job_started(seq), routes, now=NOW)
    first = claim()
    assert sorted(first) == [("loose", 1), ("loose", 2), ("loose", 3), ("ordered", 1)]
    assert claim() == []  # the head is in flight: the next waits
    with factory() as session, session.begin():
        head = _delivery_id(session, "ordered", 1)
        queue.schedule_retry(session, head, NOW + timedelta(seconds=5), 503, "down", now=NOW)
    assert claim() == []  # the head waits for its retry: still nothing after it
    assert claim(at=NOW + timedelta(seconds=5)) == [("ordered", 1)]
    with factory() as session, session.begin():
        queue.mark_delivered(session, _delivery_id(session, "ordered", 1), 202, now=NOW)
    assert claim(at=NOW + timedelta(seconds=5)) == [("ordered", 2)]
    with factory() as session, session.begin():
        queue.mark_dead(session, _delivery_id(session, "ordered", 2), 400, "refused", now=NOW)
    assert claim(at=NOW + timedelta(seconds=5)) == [("ordered", 3)]


def _delivery_id(session: Session, subscription: str, seq: int) -> int:
    for row in session.query(queue.BrokerDelivery).filter_by(subscription=subscription):
        body = session.get(queue.BrokerEvent, row.event_seq)
        assert body is not None
        if queue.decode(body.body).seq == seq:
            return row.id
    raise AssertionError(f"no delivery of seq {seq} to {subscription}")


async def test_user_subscriptions_are_http_sinks_with_their_policy(
    factory: sessionmaker[Session],
) -> None:
    import httpx

    subscribe(factory, "defaults", "http://127.0.0.1:9/")
    subscribe(factory, "custom", "http://127.0.0.1:9/", delivery={"retry": 2, "timeout": "PT3S"})
    async with httpx.AsyncClient() as client:
        with factory() as session, session.begin():
            found = {s.name: s for s in user_subscriptions(session, client)}
    assert all(subscription.ordered for subscription in found.values())
    assert found["defaults"].policy.retry == 10
    assert found["defaults"].policy.backoff_policy == "exponential"
    assert found["defaults"].policy.backoff_delay == timedelta(milliseconds=500)
    assert found["custom"].policy.retry == 2
    assert getattr(found["custom"].sink, "timeout_s", None) == 3.0


class ReplyingSink(Sink):
    """Takes each event and answers with a CloudEvent of its own (a Knative reply)."""

    async def receive(self, request: Request) -> Response:
        await super().receive(request)
        headers, body = codec.to_binary(end_requested())
        return Response(body, status_code=200, headers=headers)


async def test_a_user_subscribers_reply_is_not_published(factory: sessionmaker[Session]) -> None:
    """Its sink is anyone's: a reply would let it forge the control plane's events."""
    sink = ReplyingSink()
    async with serving(sink) as server, broker(factory) as service:
        subscribe(factory, "replier", server.url, delivery=QUICK_RETRIES)
        await service.enqueue(job_started(1))

        async def delivered() -> bool:
            return (await service.status())["delivered"] == 1

        await wait_for(delivered)
        status = await service.status()
    assert seqs(sink.accepted) == [1]
    assert status["events"] == 1  # the reply was not queued
