"""When the delivery loop claims (`Dispatcher`): once per burst of work, not once more after each
delivery; right away for an ordered subscription's next event; never for an event none of its
subscriptions takes. Each claim is a write transaction, on SQLite one at a time with every other
writer, so an empty claim per delivery was a large part of the control plane's work per prompt.
The poll is set far out, so only wakes can explain a claim."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from eventing.events import VwmEvent
from functions.broker import queue
from functions.broker.dispatcher import Dispatcher, DispatcherSettings
from functions.broker.subscriptions import LocalSink, Subscription
from tests.broker.events import job_started, tick
from tests.broker.test_dispatcher import wait_for

NO_POLL = DispatcherSettings(poll_s=30, concurrency=4, lease_s=30)
JOBS = {"filters": [{"prefix": {"type": "dev.vwm.job."}}]}


class CountingRun:
    """`queue.run_in(factory)` that counts the claims made through it."""

    def __init__(self, factory: sessionmaker[Session]) -> None:
        self._run = queue.run_in(factory)
        self.claims = 0

    async def __call__(self, fn: Callable[..., Any], *args: Any) -> Any:
        if fn.__name__ == "_claim_with_subscriptions":
            self.claims += 1
        return await self._run(fn, *args)


def subscription(spec: dict[str, Any], seen: list[str], *, ordered: bool = False) -> Subscription:
    async def receive(event: VwmEvent) -> None:
        await asyncio.sleep(0.01)
        seen.append(event.id)

    made = Subscription.from_spec("s", spec, LocalSink(receive))
    return dataclasses.replace(made, ordered=ordered)


async def test_one_claim_per_event_when_events_come_one_at_a_time(
    factory: sessionmaker[Session],
) -> None:
    run, seen = CountingRun(factory), []
    subscriptions = [subscription(JOBS, seen)]
    dispatcher = Dispatcher(run, subscriptions, NO_POLL)
    dispatcher.start()
    try:
        await wait_for(lambda: _true(run.claims == 1))  # the first claim, at start
        for n in range(10):
            event = job_started(n + 1)
            await run(queue.enqueue, event, subscriptions)
            dispatcher.notify(event)
            await wait_for(lambda n=n: _true(len(seen) == n + 1), within=5)
        await asyncio.sleep(0.2)
    finally:
        await dispatcher.stop(grace_s=1)
    assert run.claims == 1 + 10  # no empty claim after each delivery


async def test_an_ordered_subscription_gets_its_next_event_at_once(
    factory: sessionmaker[Session],
) -> None:
    run, seen = CountingRun(factory), []
    subscriptions = [subscription(JOBS, seen, ordered=True)]
    events = [job_started(n + 1) for n in range(5)]
    for event in events:
        await run(queue.enqueue, event, subscriptions)
    dispatcher = Dispatcher(run, subscriptions, NO_POLL)
    dispatcher.start()
    try:
        # One at a time, each claimable only once the one before is done: with no wake for
        # it, each would wait for the 30 s poll.
        await wait_for(lambda: _true(len(seen) == 5), within=10)
    finally:
        await dispatcher.stop(grace_s=1)
    assert seen == [event.id for event in events]


async def test_an_event_no_subscription_of_the_loop_takes_does_not_wake_it(
    factory: sessionmaker[Session],
) -> None:
    run, seen = CountingRun(factory), []
    ticks = {"filter": {"attributes": {"type": "dev.vwm.tick"}}}
    dispatcher = Dispatcher(run, [subscription(ticks, seen)], NO_POLL)
    dispatcher.start()
    try:
        await wait_for(lambda: _true(run.claims == 1))
        dispatcher.notify(job_started(1))
        await asyncio.sleep(0.3)
        assert run.claims == 1
        dispatcher.notify(tick())
        await wait_for(lambda: _true(run.claims == 2), within=5)
    finally:
        await dispatcher.stop(grace_s=1)


async def _true(value: bool) -> bool:
    return value
