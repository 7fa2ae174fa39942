"""The embedded broker's retries and dead letters move their counters (`functions.metrics`):
a real delivery loop, a real HTTP sink that fails, a real database (PostgreSQL and SQLite)."""

from __future__ import annotations

from prometheus_client import REGISTRY
from sqlalchemy.orm import Session, sessionmaker

from functions.broker import queue
from tests.broker.events import job_started
from tests.broker.test_dispatcher import (
    TimedSink,
    _client,
    _states,
    dispatching,
    enqueue,
    http_subscription,
    wait_for,
)
from tests.support.event_sink import serving


def counted(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


async def test_each_retry_and_the_dead_delivery_are_counted(
    factory: sessionmaker[Session],
) -> None:
    run = queue.run_in(factory)
    sink = TimedSink()
    sink.answers.extend([500, 500, 500])
    retries, dead = (
        counted("vwm_broker_delivery_retries_total"),
        counted("vwm_broker_dead_letters_total"),
    )
    async with serving(sink) as server, _client() as client:
        spec = {"delivery": {"retry": 2, "backoffPolicy": "linear", "backoffDelay": "PT0.05S"}}
        subscriptions = [http_subscription("s", server.url, spec, client)]
        await enqueue(run, subscriptions, job_started(1))
        async with dispatching(run, subscriptions):
            await wait_for(lambda: _states(run, "dead"))
    assert len(sink.arrivals) == 3
    assert counted("vwm_broker_delivery_retries_total") - retries == 2
    assert counted("vwm_broker_dead_letters_total") - dead == 1
