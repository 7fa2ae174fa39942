"""The control plane's outbox relayed to an event sink in production (`functions.outbox_relay`):
a function's app, built by `functions.api.build_app` as functions-framework's targets build it,
on a real database, with ``VWM_EVENT_SINK`` pointing at a real HTTP sink on a local port. Rows
written to `vwm.outbox` in a transaction (`functions.broker.outbox.add`) arrive in order; a sink
that is down gets them once it is back, none lost; a refusal is dead-lettered and the next goes;
the tick sends what is pending before it answers, also when no relay runs; two replicas draining
one table at once lose nothing and stop for nothing; `vwm up` runs no relay (its broker drains)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from eventing.codec import to_binary
from eventing.events import CONTROL_PLANE_SOURCE, Tick, VwmEvent, new_event
from eventing.outbox import OutboxEntry
from eventing.publisher import PublisherError
from functions import events as events_function
from functions import sessions as sessions_function
from functions.api import build_app
from functions.broker import queue
from functions.broker.outbox import add
from functions.context import lookup_key
from functions.db.engine import make_engine, session_factory
from functions.embedded import create_app, prepare
from functions.events import receive
from functions.outbox_relay import (
    OutboxRelay,
    OutboxRelaySettingError,
    OutboxRelaySettings,
    TableOutbox,
)
from functions.services import Services, bound
from functions.settings import ControlPlaneSettings
from tests.broker.events import job_started
from tests.db.conftest import backend, engine, factory, migrated_url, new_database
from tests.support.event_sink import Sink, SinkServer
from tests.support.lifespan import serving

T = TypeVar("T")

__all__ = ["backend", "engine", "factory", "migrated_url", "new_database"]


@pytest.fixture
async def sink() -> AsyncIterator[SinkServer]:
    server = SinkServer(Sink())
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def relay_env(monkeypatch: pytest.MonkeyPatch, sink: SinkServer) -> pytest.MonkeyPatch:
    """The environment a production function gets: a sink (as a SinkBinding's K_SINK would be),
    with small timeouts and backoffs so that every test is over in seconds."""
    monkeypatch.setenv("VWM_EVENT_SINK", sink.url)
    monkeypatch.delenv("K_SINK", raising=False)
    monkeypatch.setenv("VWM_EVENT_TIMEOUT_S", "2")
    monkeypatch.setenv("VWM_EVENT_BACKOFF_S", "0.01")
    monkeypatch.setenv("VWM_EVENT_BACKOFF_CAP_S", "0.05")
    monkeypatch.setenv("VWM_OUTBOX_POLL_S", "0.2")
    return monkeypatch


def control_plane(data_dir: Path, database_url: str | None = None) -> tuple[Services, str]:
    """`Services` on a migrated database (an SQLite file in `data_dir` by default), read from a
    mapping, and its first admin key."""
    env = {"VWM_DATA_DIR": str(data_dir), "VWM_SANDBOX": "off"}
    if database_url:
        env["VWM_DATABASE_URL"] = database_url
    services = Services.build(ControlPlaneSettings.from_env(env))
    key = prepare(services.settings.database_url) or ""
    return services, key


def function_app(services: Services, endpoints: Sequence = sessions_function.ENDPOINTS):
    """A function's app as `functions.main.function_app` builds it (one function's endpoints,
    no lifespan of its own), on the given services."""
    return build_app(
        endpoints, lookup_key, title="VWM function", services=services, close_services=True
    )


def write(session: Session, events: Sequence[VwmEvent]) -> None:
    for event in events:
        add(session, event)


async def arrived(sink: SinkServer, count: int, within_s: float = 5.0) -> list[str]:
    """The ids the sink accepted, once it has `count` distinct ones, first copies in order."""
    async with asyncio.timeout(within_s):
        while len(set(sink.sink.ids)) < count:  # noqa: ASYNC110 (the sink's list)
            await asyncio.sleep(0.01)
    return list(dict.fromkeys(sink.sink.ids))


async def settled(outbox: TableOutbox, within_s: float = 5.0) -> int:
    """Pending rows once none is left (the sink answers before the relay deletes the row)."""
    async with asyncio.timeout(within_s):
        while pending := await outbox.pending():  # noqa: ASYNC110 (the database)
            await asyncio.sleep(0.02)
    return pending


def relay_of(services: Services) -> OutboxRelay:
    assert services.outbox_relay is not None, "the app's lifespan started no outbox relay"
    return services.outbox_relay


async def test_rows_written_in_transactions_arrive_in_order(tmp_path, sink, relay_env):
    services, _ = control_plane(tmp_path)
    first, second = [job_started(n) for n in range(1, 4)], [job_started(n) for n in range(4, 6)]
    async with serving(function_app(services)):
        relay = relay_of(services)
        await services.db(write, first)
        await services.db(write, second)
        assert await arrived(sink, 5) == [event.id for event in first + second]
        assert await settled(relay.outbox) == 0
        assert relay.running
    assert services.outbox_relay is None  # stopped with the app
    assert not relay.running
    assert [event.source for event in sink.sink.accepted] == [first[0].source] * 5


async def test_a_commit_of_this_app_wakes_the_relay_without_waiting_for_the_poll(
    tmp_path, sink, relay_env
):
    relay_env.setenv("VWM_OUTBOX_POLL_S", "60")
    services, _ = control_plane(tmp_path)
    async with serving(function_app(services)):
        await asyncio.sleep(0.1)  # its first look found nothing: it waits
        event = job_started(1)
        started = time.monotonic()
        await services.db(write, [event])
        assert await arrived(sink, 1, within_s=3) == [event.id]
        assert time.monotonic() - started < 3  # woken by the commit, not by a 60 s poll


async def test_rows_another_process_writes_arrive_within_a_poll(tmp_path, sink, relay_env):
    services, _ = control_plane(tmp_path)
    other = make_engine(services.settings.database_url)  # another replica: no hook of ours
    try:
        async with serving(function_app(services)):
            await asyncio.sleep(0.1)
            events = [job_started(n) for n in range(1, 4)]
            await queue.run_in(session_factory(other))(write, events)
            assert await arrived(sink, 3, within_s=3) == [event.id for event in events]
    finally:
        other.dispose()


async def test_a_sink_that_is_down_gets_every_row_once_it_is_back_in_order(
    tmp_path, sink, relay_env
):
    services, _ = control_plane(tmp_path)
    events = [job_started(n) for n in range(1, 6)]
    async with serving(function_app(services)):
        relay = relay_of(services)
        await sink.stop()
        await services.db(write, events[:3])
        await asyncio.sleep(0.5)  # tries, fails, backs off, tries again
        assert sink.sink.arrivals == []
        assert await relay.outbox.pending() == 3
        await services.db(write, events[3:])
        await sink.start()
        assert await arrived(sink, 5, within_s=10) == [event.id for event in events]
        assert await settled(relay.outbox) == 0
        assert await relay.outbox.dead_letters() == []


async def test_a_refused_row_becomes_a_dead_letter_and_the_next_goes(tmp_path, sink, relay_env):
    services, _ = control_plane(tmp_path)
    refused, accepted = job_started(1), job_started(2)
    sink.sink.answers.append(400)
    async with serving(function_app(services)):
        relay = relay_of(services)
        await services.db(write, [refused, accepted])
        assert await arrived(sink, 1) == [accepted.id]
        (letter,) = await relay.outbox.dead_letters()
        assert (letter.event, letter.status) == (refused, 400)
        assert "answered 400" in letter.answer
        assert await settled(relay.outbox) == 0


async def test_the_tick_drains_pending_rows_when_no_relay_runs(tmp_path, sink, relay_env):
    """The relay is there but its task is not running (between a database failure and its
    restart, say): the tick sends what is pending itself, before it answers."""
    services, _ = control_plane(tmp_path)
    events = [job_started(n) for n in range(1, 4)]
    relay = OutboxRelay(services, OutboxRelaySettings.from_env() or pytest.fail("no settings"))
    services.outbox_relay = relay  # never started
    try:
        await services.db(write, events)
        assert sink.sink.arrivals == []
        with bound(services):
            await receive(new_event(Tick(), source=CONTROL_PLANE_SOURCE))
        assert sink.sink.ids == [event.id for event in events]  # before the tick answered
        assert await relay.outbox.pending() == 0
    finally:
        await relay.stop()
        await services.aclose()


def _ping() -> tuple[dict[str, str], bytes]:
    """What the PingSource vwm-tick (infra/knative/tick.yaml) delivers, as Knative sends it: its
    own type, which a PingSource cannot change, and its data."""
    headers = {
        "ce-specversion": "1.0",
        "ce-id": str(uuid.uuid4()),
        "ce-source": "/apis/v1/namespaces/vwm/pingsources/vwm-tick",
        "ce-type": "dev.knative.sources.ping",
        "ce-time": "2026-12-03T10:00:00.000000001Z",
        "content-type": "application/json",
    }
    return headers, b'{"schedule": "* * * * *"}'


@pytest.mark.parametrize("tick", ["vwm", "pingsource"])
async def test_a_tick_delivered_to_a_cold_events_function_answers_after_the_drain(
    tmp_path, sink, relay_env, tick
):
    """Scale to zero: rows were written while no replica was up; the tick is the events
    function's first request (its lifespan starts the relay), and it answers once they left.
    In production the tick is a PingSource's ping."""
    services, key = control_plane(tmp_path)
    events = [job_started(n) for n in range(1, 4)]
    await services.db(write, events)
    if tick == "vwm":
        headers, body = to_binary(new_event(Tick(), source=CONTROL_PLANE_SOURCE))
    else:
        headers, body = _ping()
    async with serving(function_app(services, events_function.ENDPOINTS)) as client:
        answer = await client.post(
            "/v1/events", headers={**headers, "authorization": f"Bearer {key}"}, content=body
        )
        assert answer.status_code == 202, answer.text
        assert sink.sink.ids == [event.id for event in events]


async def test_without_a_sink_nothing_relays_and_the_tick_changes_nothing(
    tmp_path, sink, monkeypatch
):
    monkeypatch.delenv("VWM_EVENT_SINK", raising=False)
    monkeypatch.delenv("K_SINK", raising=False)
    services, _ = control_plane(tmp_path)
    async with serving(function_app(services)):
        assert services.outbox_relay is None
        await services.db(write, [job_started(1)])
        with bound(services):
            await receive(new_event(Tick(), source=CONTROL_PLANE_SOURCE))
        assert await TableOutbox(services.db).pending() == 1
    assert sink.sink.arrivals == []


async def test_vwm_up_runs_no_relay_its_broker_drains_the_outbox(tmp_path, sink, relay_env):
    services, _ = control_plane(tmp_path)
    async with serving(create_app(services, close_services=True)):
        assert services.outbox_relay is None
        await services.db(write, [job_started(1)])
        await settled(TableOutbox(services.db))
    assert sink.sink.arrivals == []  # into the broker's queue, not to the sink


async def test_stop_is_bounded_while_the_sink_holds_an_answer(tmp_path, sink, relay_env):
    services, _ = control_plane(tmp_path)
    sink.sink.hold = asyncio.Event()
    event = job_started(1)
    async with serving(function_app(services)):
        relay = relay_of(services)
        await services.db(write, [event])
        async with asyncio.timeout(5):
            await sink.sink.held.wait()
        started = time.monotonic()
        await relay.stop(grace_s=0.3)
        assert time.monotonic() - started < 2
        assert await relay.outbox.pending() == 1  # cut off mid-POST: sent again by a later relay
    sink.sink.hold.set()


class FailingDatabase:
    """The app's services, whose database fails for the first `failures` units of work (as
    during a PostgreSQL restart)."""

    def __init__(self, services: Services, failures: int) -> None:
        self.services = services
        self.failures = failures
        self.outbox_relay: OutboxRelay | None = None

    @property
    def session_factory(self) -> sessionmaker[Session]:
        return self.services.session_factory

    async def db(self, fn: Callable[..., T], *args: Any) -> T:
        if self.failures > 0:
            self.failures -= 1
            raise OperationalError("SELECT", {}, ConnectionRefusedError("the database restarts"))
        return await self.services.db(fn, *args)


async def test_a_relay_the_database_stopped_is_started_again(tmp_path, sink, relay_env):
    services, _ = control_plane(tmp_path)
    flaky = FailingDatabase(services, failures=2)
    settings = OutboxRelaySettings.from_env()
    assert settings is not None
    relay = OutboxRelay(flaky, settings)
    events = [job_started(n) for n in range(1, 3)]
    await services.db(write, events)
    relay.start()
    try:
        assert await arrived(sink, 2) == [event.id for event in events]
        assert relay.restarts == 2
        assert relay.running
    finally:
        await relay.stop()
        await services.aclose()


# -- two replicas on one table ------------------------------------------------------------------


async def test_two_replicas_draining_one_table_lose_nothing_and_keep_running(
    tmp_path, sink, relay_env, migrated_url, factory: sessionmaker[Session]
):
    """Both read the same head and send it; whichever deletes it second finds it gone and goes
    on (a duplicate the consumer drops by source + id), where a single-relay outbox would stop."""
    one, _ = control_plane(tmp_path / "one", migrated_url)
    two, _ = control_plane(tmp_path / "two", migrated_url)
    events = [job_started(n) for n in range(1, 31)]
    async with serving(function_app(one)), serving(function_app(two)):
        for start in range(0, 30, 5):
            await (one if start % 10 else two).db(write, events[start : start + 5])
        assert await arrived(sink, 30, within_s=15) == [event.id for event in events]
        assert await settled(relay_of(one).outbox) == 0
        assert relay_of(one).running and relay_of(two).running
        assert await relay_of(one).outbox.dead_letters() == []


async def test_completing_a_row_another_relay_completed_is_a_no_op(
    migrated_url, factory: sessionmaker[Session]
):
    run = queue.run_in(factory)
    mine, theirs = TableOutbox(run), TableOutbox(run)
    first, second = job_started(1), job_started(2)
    await run(write, [first, second])
    head: OutboxEntry = (await mine.peek(1))[0]
    (also_head,) = await theirs.peek(1)
    await theirs.mark_sent(also_head)  # the other replica was faster
    await mine.mark_sent(head)  # no error: already gone
    await mine.dead_letter(head, status=400, answer="too late")  # nor here: nothing to kill
    assert [entry.event for entry in await mine.peek(5)] == [second]
    assert await mine.dead_letters() == []


# -- settings -----------------------------------------------------------------------------------


def test_settings_come_from_the_sink_variables_and_the_poll():
    assert OutboxRelaySettings.from_env({}) is None
    knative = OutboxRelaySettings.from_env({"K_SINK": "http://broker.example/ns/default"})
    assert knative is not None
    assert (knative.publisher.sink, knative.poll_s) == ("http://broker.example/ns/default", 1.0)
    ours = OutboxRelaySettings.from_env(
        {
            "VWM_EVENT_SINK": "http://a.example/",
            "K_SINK": "http://b.example/",
            "VWM_OUTBOX_POLL_S": "0.5",
        }
    )
    assert ours is not None
    assert (ours.publisher.sink, ours.poll_s) == ("http://a.example/", 0.5)


@pytest.mark.parametrize("poll", ["0", "-1", "soon", "nan", "inf", "7200"])
def test_a_poll_that_cannot_work_is_refused_naming_the_variable(poll):
    with pytest.raises(OutboxRelaySettingError, match="VWM_OUTBOX_POLL_S") as caught:
        OutboxRelaySettings.from_env(
            {"K_SINK": "http://broker.example/", "VWM_OUTBOX_POLL_S": poll}
        )
    assert caught.value.code == "invalid_outbox_setting"


async def test_an_app_with_a_sink_that_cannot_work_does_not_start(tmp_path, monkeypatch):
    monkeypatch.setenv("VWM_EVENT_SINK", "not a url")
    services, _ = control_plane(tmp_path)
    with pytest.raises(Exception, match="absolute http"):
        async with serving(function_app(services)):
            pass
    with pytest.raises(PublisherError):
        OutboxRelaySettings.from_env({"VWM_EVENT_SINK": "not a url"})
