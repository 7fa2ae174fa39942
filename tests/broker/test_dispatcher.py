"""The delivery loop (`functions.broker.dispatcher`) against real HTTP sinks on local ports and a
real database (PostgreSQL and SQLite): retries with Knative's backoff, dead letters (kept, and
POSTed to the dead-letter sink), at least once across a stop, filters, duplicates, local
subscribers, replies and the tick."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from starlette.requests import Request
from starlette.responses import Response

from eventing import codec
from eventing.events import CONTROL_PLANE_SOURCE, TICK, EventError, VwmEvent
from functions.broker import queue
from functions.broker.dispatcher import Dispatcher, DispatcherSettings
from functions.broker.service import BrokerService, BrokerSettings
from functions.broker.subscriptions import HttpSink, LocalSink, Subscription
from functions.db.models import BrokerDelivery
from functions.events import EventsUnavailable
from tests.broker.events import OTHER_SESSION, SESSION, end_requested, job_started, tick
from tests.support.event_sink import Sink, SinkServer, serving
from tests.support.harness_process import REPO_ROOT

FAST = DispatcherSettings(poll_s=0.05, concurrency=4, lease_s=30)


class TimedSink(Sink):
    """A sink that also notes when each request came and its headers."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []
        self.headers: list[dict[str, str]] = []

    async def receive(self, request: Request) -> Response:
        self.times.append(time.monotonic())
        self.headers.append(dict(request.headers))
        return await super().receive(request)


def http_subscription(name: str, url: str, spec: dict[str, Any], client: Any) -> Subscription:
    probe = Subscription.from_spec(name, spec, LocalSink(_never))
    return Subscription(
        name, probe.filter, HttpSink.for_policy(url, client, probe.policy), probe.policy
    )


async def _never(event: VwmEvent) -> None:
    raise AssertionError("not used")


async def enqueue(run: queue.Run, subscriptions: list[Subscription], *events: VwmEvent) -> None:
    for event in events:
        await run(queue.enqueue, event, subscriptions)


async def wait_for(check: Callable[[], Awaitable[bool]], within: float = 15) -> None:
    async with asyncio.timeout(within):
        while not await check():  # noqa: ASYNC110 (the state is in the database)
            await asyncio.sleep(0.02)


def rows(session: Session) -> list[BrokerDelivery]:
    return list(session.scalars(select(BrokerDelivery).order_by(BrokerDelivery.id)))


@asynccontextmanager
async def dispatching(
    run: queue.Run, subscriptions: list[Subscription], settings: DispatcherSettings = FAST
) -> AsyncIterator[Dispatcher]:
    dispatcher = Dispatcher(run, subscriptions, settings)
    dispatcher.start()
    try:
        yield dispatcher
    finally:
        await dispatcher.stop(grace_s=1)


async def test_failed_answers_are_retried_with_exponential_backoff_until_accepted(
    factory: sessionmaker[Session],
) -> None:
    run = queue.run_in(factory)
    sink = TimedSink()
    sink.answers.extend([503, 429])
    async with serving(sink) as server, _client() as client:
        spec = {"delivery": {"retry": 3, "backoffPolicy": "exponential", "backoffDelay": "PT0.2S"}}
        subscriptions = [http_subscription("s", server.url, spec, client)]
        await enqueue(run, subscriptions, job_started(1))
        async with dispatching(run, subscriptions):
            await wait_for(lambda: _states(run, "delivered"))
    assert [arrival.status for arrival in sink.arrivals] == [503, 429, 202]
    first_wait, second_wait = (b - a for a, b in zip(sink.times, sink.times[1:], strict=False))
    # The lower bounds tell exponential from constant; the upper ones allow a loaded machine.
    assert 0.2 <= first_wait < 0.2 + 1.0  # backoffDelay x 2^0
    assert 0.4 <= second_wait < 0.4 + 1.0  # backoffDelay x 2^1
    assert all(headers.get("ce-specversion") == "1.0" for headers in sink.headers)  # binary
    [row] = await run(rows)
    assert (row.state, row.attempts, row.last_status) == ("delivered", 3, 202)


async def test_after_the_last_retry_the_event_goes_to_the_dead_letter_sink_and_stays_dead(
    factory: sessionmaker[Session],
) -> None:
    run = queue.run_in(factory)
    sink, dead = TimedSink(), TimedSink()
    sink.answers.extend([500, 500, 500])
    async with serving(sink) as server, serving(dead) as dls, _client() as client:
        spec = {
            "delivery": {
                "retry": 2,
                "backoffPolicy": "linear",
                "backoffDelay": "PT0.05S",
                "deadLetterSink": {"uri": dls.url},
            }
        }
        subscriptions = [http_subscription("s", server.url, spec, client)]
        await enqueue(run, subscriptions, job_started(1))
        async with dispatching(run, subscriptions):
            await wait_for(lambda: _states(run, "dead"))
            await wait_for(lambda: _true(len(dead.arrivals) == 1))
    assert len(sink.arrivals) == 3  # the first attempt and two retries
    assert dead.ids == [job_started(1).id]
    assert dead.arrivals[0].event == job_started(1)
    assert dead.headers[0]["ce-knativeerrorcode"] == "500"
    assert dead.headers[0]["ce-knativeerrordest"] == server.url
    [letter] = await run(queue.dead_letters)
    assert (letter.subscription, letter.attempts, letter.last_status) == ("s", 3, 500)
    assert "scripted" in letter.last_answer  # the subscriber's own answer is kept


async def test_a_refusal_is_not_retried_and_without_a_dead_letter_sink_is_kept(
    factory: sessionmaker[Session],
) -> None:
    run = queue.run_in(factory)
    sink = TimedSink()
    sink.answers.extend([400])
    async with serving(sink) as server, _client() as client:
        subscriptions = [http_subscription("s", server.url, {}, client)]  # Knative's 10 retries
        await enqueue(run, subscriptions, job_started(1))
        async with dispatching(run, subscriptions):
            await wait_for(lambda: _states(run, "dead"))
    assert len(sink.arrivals) == 1
    [row] = await run(rows)
    assert (row.attempts, row.last_status) == (1, 400)


async def test_a_delivery_cut_off_by_a_crash_is_made_again_after_its_lease(
    factory: sessionmaker[Session],
) -> None:
    run = queue.run_in(factory)
    sink = TimedSink()
    gate = asyncio.Event()
    sink.hold = gate  # the first answer never comes while the first loop lives
    lease = DispatcherSettings(poll_s=0.05, lease_s=1.5)
    async with serving(sink) as server, _client() as client:
        subscriptions = [http_subscription("s", server.url, {}, client)]
        await enqueue(run, subscriptions, job_started(1))
        first = Dispatcher(run, subscriptions, lease)
        first.start()
        async with asyncio.timeout(10):
            await sink.held.wait()
        sink.hold = None  # later attempts are answered
        cut_at = time.monotonic()
        await first.stop(grace_s=0.1, release_leases=False)  # as if killed: the lease stays
        async with dispatching(run, subscriptions, lease):
            await wait_for(lambda: _states(run, "delivered"))
        gate.set()
    assert [arrival.event.id for arrival in sink.arrivals] == [job_started(1).id] * 2
    assert sink.times[1] - cut_at >= 1.0  # not before the lease (1.5 s from the claim) expired
    [row] = await run(rows)
    assert (row.state, row.attempts) == ("delivered", 2)


async def test_a_clean_stop_gives_the_leases_back_for_the_next_loop(
    factory: sessionmaker[Session],
) -> None:
    run = queue.run_in(factory)
    sink = TimedSink()
    gate = asyncio.Event()
    sink.hold = gate
    lease = DispatcherSettings(poll_s=0.05, lease_s=30)
    async with serving(sink) as server, _client() as client:
        subscriptions = [http_subscription("s", server.url, {}, client)]
        await enqueue(run, subscriptions, job_started(1))
        first = Dispatcher(run, subscriptions, lease)
        first.start()
        async with asyncio.timeout(10):
            await sink.held.wait()
        sink.hold = None
        await first.stop(grace_s=0.1)
        async with dispatching(run, subscriptions, lease):
            await wait_for(lambda: _states(run, "delivered"), within=5)  # well before 30 s
        gate.set()
    [row] = await run(rows)
    assert (row.state, row.attempts) == ("delivered", 1)  # the cut-off attempt is not counted


async def test_each_subscription_gets_exactly_the_events_its_filter_matches(
    factory: sessionmaker[Session],
) -> None:
    run = queue.run_in(factory)
    table: dict[str, tuple[dict[str, Any], set[str]]] = {
        "jobs": ({"filters": [{"prefix": {"type": "dev.vwm.job."}}]}, {"job1", "job2"}),
        "ticks": ({"filter": {"attributes": {"type": TICK}}}, {"tick"}),
        "session": ({"filters": [{"exact": {"sessionid": SESSION}}]}, {"job1", "end"}),
        "nothing": ({"filters": [{"exact": {"type": "dev.vwm.none"}}]}, set()),
    }
    events = {
        "job1": job_started(1),
        "job2": job_started(2, session=OTHER_SESSION, job="b" * 32),
        "tick": tick(),
        "end": end_requested(),
    }
    sinks = {name: TimedSink() for name in table}
    async with _client() as client, _servers(sinks) as servers:
        subscriptions = [
            http_subscription(name, servers[name].url, spec, client)
            for name, (spec, _) in table.items()
        ]
        await enqueue(run, subscriptions, *events.values())
        async with dispatching(run, subscriptions):
            await wait_for(lambda: _states(run, "delivered"))
    name_of = {event.id: name for name, event in events.items()}
    for name, (_, expected) in table.items():
        assert {name_of[event_id] for event_id in sinks[name].ids} == expected, name
        assert len(sinks[name].ids) == len(expected)  # once each
    # First attempts in arrival order: the jobs sink saw job1 before job2.
    assert sinks["jobs"].ids == [events["job1"].id, events["job2"].id]


async def test_an_event_posted_twice_is_queued_and_delivered_once(
    factory: sessionmaker[Session],
) -> None:
    run = queue.run_in(factory)
    got: list[VwmEvent] = []

    async def record(event: VwmEvent) -> None:
        got.append(event)

    local = Subscription.from_spec("local", {}, LocalSink(record))
    service = BrokerService(run, [local], BrokerSettings(poll_s=0.05, tick_s=0))
    await service.start()
    try:
        assert await service.enqueue(job_started(1)) is True
        assert await service.enqueue(job_started(1)) is False
        await wait_for(lambda: _states(run, "delivered"))
        await asyncio.sleep(0.2)
    finally:
        await service.stop()
    assert got == [job_started(1)]
    assert (await run(queue.counts))["events"] == 1


async def test_a_local_subscriber_refusal_is_dead_at_once_and_unavailability_is_retried(
    factory: sessionmaker[Session],
) -> None:
    run = queue.run_in(factory)
    calls: dict[str, int] = {}

    async def receive(event: VwmEvent) -> None:
        calls[event.id] = calls.get(event.id, 0) + 1
        if event.type == TICK:
            raise EventError("invalid_payload", "not for us")
        if calls[event.id] < 3:
            raise EventsUnavailable("the database is unavailable; retry")

    spec = {"delivery": {"retry": 5, "backoffPolicy": "exponential", "backoffDelay": "PT0.01S"}}
    sink = LocalSink(receive, unavailable=(EventsUnavailable,))
    local = Subscription.from_spec("local", spec, sink)
    await enqueue(run, [local], tick(), job_started(1))
    async with dispatching(run, [local]):
        await wait_for(lambda: _settled(run))
    dead, delivered = await run(rows)
    assert (dead.state, dead.attempts, dead.last_status) == ("dead", 1, 400)
    assert dead.last_answer is not None and "invalid_payload" in dead.last_answer
    assert (delivered.state, delivered.attempts) == ("delivered", 3)


async def test_a_reply_event_is_published_back_into_the_broker(
    factory: sessionmaker[Session],
) -> None:
    run = queue.run_in(factory)
    replied = end_requested()

    class Replier(TimedSink):
        async def receive(self, request: Request) -> Response:
            await super().receive(request)
            headers, body = codec.to_binary(replied)
            return Response(body, status_code=200, headers=headers)

    got: list[VwmEvent] = []

    async def record(event: VwmEvent) -> None:
        got.append(event)

    replier = Replier()
    async with serving(replier) as server, _client() as client:
        subscriptions = [
            http_subscription(
                "jobs", server.url, {"filters": [{"prefix": {"type": "dev.vwm.job."}}]}, client
            ),
            Subscription.from_spec(
                "ends",
                {"filters": [{"exact": {"type": "dev.vwm.session.end.requested"}}]},
                LocalSink(record),
            ),
        ]
        await enqueue(run, subscriptions, job_started(1))
        async with dispatching(run, subscriptions):
            await wait_for(lambda: _true(len(got) == 1))
    assert got == [replied]


async def test_the_tick_reaches_subscribers_through_the_broker(
    factory: sessionmaker[Session],
) -> None:
    run = queue.run_in(factory)
    got: list[VwmEvent] = []

    async def record(event: VwmEvent) -> None:
        got.append(event)

    ticks = Subscription.from_spec(
        "ticks", {"filters": [{"exact": {"type": TICK}}]}, LocalSink(record)
    )
    service = BrokerService(run, [ticks], BrokerSettings(poll_s=0.05, tick_s=0.1))
    await service.start()
    try:
        await wait_for(lambda: _true(len(got) >= 2))
    finally:
        await service.stop()
    assert {event.source for event in got} == {CONTROL_PLANE_SOURCE}
    assert len({event.id for event in got}) == len(got)  # a new event each time


# -- helpers ---------------------------------------------------------------------------------


@asynccontextmanager
async def _client() -> AsyncIterator[Any]:
    import httpx

    async with httpx.AsyncClient(trust_env=False) as client:
        yield client


@asynccontextmanager
async def _servers(sinks: Mapping[str, Sink]) -> AsyncIterator[dict[str, SinkServer]]:
    servers = {name: SinkServer(sink) for name, sink in sinks.items()}
    for server in servers.values():
        await server.start()
    try:
        yield servers
    finally:
        for server in servers.values():
            await server.stop()


async def _states(run: queue.Run, state: str) -> bool:
    """Every delivery is in `state`."""
    found = await run(rows)
    return bool(found) and all(row.state == state for row in found)


async def _settled(run: queue.Run) -> bool:
    return all(row.state != "pending" for row in await run(rows))


async def _true(value: bool) -> bool:
    return value


async def test_a_loop_killed_mid_delivery_leaves_the_event_to_the_next_loop(
    factory: sessionmaker[Session], migrated_url: str
) -> None:
    """A real crash: the delivery loop of another process is SIGKILLed while its subscriber
    holds the answer; a loop of this process delivers the event again once the lease expired."""
    from tests.broker.dispatch_process import subscription

    run = queue.run_in(factory)
    sink = TimedSink()
    gate = asyncio.Event()
    sink.hold = gate
    lease_s = 1.5
    async with serving(sink) as server, _client() as client:
        subscriptions = [subscription(server.url, client)]
        await enqueue(run, subscriptions, job_started(1))
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.broker.dispatch_process",
            migrated_url,
            server.url,
            str(lease_s),
            cwd=REPO_ROOT,
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            async with asyncio.timeout(30):
                await sink.held.wait()
        finally:
            process.kill()
            await process.wait()
        killed_at = time.monotonic()
        sink.hold = None
        async with dispatching(run, subscriptions, DispatcherSettings(poll_s=0.05, lease_s=30)):
            await wait_for(lambda: _states(run, "delivered"))
        gate.set()
    assert [arrival.event for arrival in sink.arrivals] == [job_started(1)] * 2
    assert sink.times[1] - killed_at >= 1.0  # it waited for the dead loop's lease (1.5 s)
    [row] = await run(rows)
    assert (row.state, row.attempts, row.last_status) == ("delivered", 2, 202)


async def test_an_event_queued_by_another_process_is_found_by_polling(
    factory: sessionmaker[Session],
) -> None:
    """No `notify` reaches this loop from another process: it polls every `poll_s`."""
    run = queue.run_in(factory)
    got: list[VwmEvent] = []

    async def record(event: VwmEvent) -> None:
        got.append(event)

    local = Subscription.from_spec("local", {}, LocalSink(record))
    async with dispatching(run, [local], DispatcherSettings(poll_s=0.3)):
        await asyncio.sleep(0.1)  # the loop has looked once and found nothing
        queued_at = time.monotonic()
        await enqueue(run, [local], job_started(1))  # as another process would: no notify
        await wait_for(lambda: _true(len(got) == 1))
        waited = time.monotonic() - queued_at
    assert got == [job_started(1)]
    assert waited < 0.3 + 0.5
