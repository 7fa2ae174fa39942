"""The control plane's outbox in the database (`vwm.outbox`: `functions.broker.outbox.add`, and
`functions.outbox_relay.TableOutbox`, its one `Outbox`), on PostgreSQL and SQLite: the
behaviours tests/eventing/test_outbox.py checks for the file outbox (append order, surviving a
new process, concurrent appends keep their order, dead letters keep the answer), plus what only
a database outbox does: a row it did not write is set aside instead of stopping the relay, an
event written in the caller's transaction leaves only if that transaction commits, and `vwm up`
moves it into the broker's queue in one transaction. (Several relays draining it at once:
tests/control_plane/test_outbox_relay.py.)"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from eventing.publisher import Publisher, PublisherSettings
from eventing.relay import Relay
from functions.broker import queue
from functions.broker.filters import MATCH_ALL, TriggerFilter
from functions.broker.outbox import add, drain_to_queue
from functions.db.engine import transaction
from functions.db.models import BrokerEvent, OutboxEvent
from functions.outbox_relay import TableOutbox
from tests.broker.events import JOB, job_started
from tests.support.event_sink import Sink, SinkServer


@dataclass(frozen=True)
class Route:
    name: str
    filter: TriggerFilter


def outbox(factory: sessionmaker[Session]) -> TableOutbox:
    return TableOutbox(queue.run_in(factory))


async def drain(box: TableOutbox) -> list[str]:
    """Mark everything sent, oldest first; the ids in the order they left."""
    ids = []
    while entries := await box.peek(3):
        for entry in entries:
            ids.append(entry.event.id)
            await box.mark_sent(entry)
    return ids


async def test_events_leave_in_append_order_and_survive_a_new_process(factory) -> None:
    box = outbox(factory)
    events = [job_started(seq) for seq in range(1, 6)]
    for event in events:
        await box.append(event)
    assert await box.pending() == 5
    first, second = await box.peek(2)
    assert (first.event, second.event) == (events[0], events[1])  # the whole event round-trips
    await box.mark_sent(first)

    reopened = outbox(factory)  # another process on the same database
    assert await reopened.pending() == 4
    assert await drain(reopened) == [event.id for event in events[1:]]
    assert await reopened.pending() == 0
    assert await outbox(factory).peek(10) == []


async def test_an_entry_completed_twice_changes_nothing(factory) -> None:
    """Two relays may both send the head: the second one's completion is a no-op."""
    box = outbox(factory)
    for seq in (1, 2):
        await box.append(job_started(seq))
    first, _ = await box.peek(2)
    await box.mark_sent(first)
    await box.mark_sent(first)
    await box.dead_letter(first, status=400, answer="")
    assert [entry.event.id for entry in await box.peek(5)] == [job_started(2).id]
    assert await box.pending() == 1
    assert await box.dead_letters() == []


async def test_concurrent_appends_keep_the_order_of_the_calls(factory) -> None:
    box = outbox(factory)
    events = [job_started(seq, job=f"job{seq % 4}") for seq in range(1, 41)]
    await asyncio.gather(*(box.append(event) for event in events))
    assert await drain(box) == [event.id for event in events]


async def test_dead_letters_are_kept_with_the_answer_and_leave_the_queue(factory) -> None:
    box = outbox(factory)
    await box.append(job_started(1))
    await box.append(job_started(2))
    [first, _] = await box.peek(2)
    await box.dead_letter(first, status=400, answer='{"code": "invalid_payload"}')
    assert [entry.event.id for entry in await box.peek(10)] == [job_started(2).id]
    [letter] = await outbox(factory).dead_letters()
    assert (letter.event, letter.status, letter.answer) == (
        first.event,
        400,
        '{"code": "invalid_payload"}',
    )
    assert await box.pending() == 1


async def test_a_row_it_did_not_write_is_set_aside_and_the_next_goes(factory) -> None:
    box = outbox(factory)
    await box.append(job_started(1))
    await box.append(job_started(2))
    with transaction(factory) as session:
        first = min(session.scalars(select(OutboxEvent.seq)))
        session.execute(
            update(OutboxEvent)
            .where(OutboxEvent.seq == first)
            .values(body='{"specversion": "1.0", "id": "x"}')
        )
    assert [entry.event.id for entry in await box.peek(5)] == [job_started(2).id]
    with transaction(factory) as session:
        bad = session.get(OutboxEvent, first)
        assert bad is not None and bad.state == "dead"
        assert bad.answer is not None and bad.answer.startswith("not a VWM event")


def test_an_event_leaves_only_with_the_transaction_that_wrote_it(factory) -> None:
    with pytest.raises(RuntimeError), transaction(factory) as session:
        add(session, job_started(1))
        raise RuntimeError("the state change failed")
    with transaction(factory) as session:
        add(session, job_started(2))
    with transaction(factory) as session:
        assert [row.id for row in session.scalars(select(OutboxEvent))] == [job_started(2).id]


def test_vwm_up_moves_the_outbox_into_the_queue_in_one_transaction(factory) -> None:
    routes = [Route("all", MATCH_ALL)]
    with transaction(factory) as session:
        for seq in (1, 2, 3):
            add(session, job_started(seq))
        session.add(
            OutboxEvent(source="/x", id="bad", type="dev.vwm.tick", body="{}", state="pending")
        )
    with transaction(factory) as session:
        add(session, job_started(1))  # the same event twice: queued once
    with transaction(factory) as session:
        assert drain_to_queue(session, routes, limit=2) == 2
    with transaction(factory) as session:
        assert drain_to_queue(session, routes) == 2
        assert drain_to_queue(session, routes) == 0
    with transaction(factory) as session:
        queued = [row.id for row in session.scalars(select(BrokerEvent).order_by(BrokerEvent.seq))]
        assert queued == [f"{JOB}.{seq}" for seq in (1, 2, 3)]
        [left] = session.scalars(select(OutboxEvent))
        assert (left.id, left.state) == ("bad", "dead")
        assert left.answer is not None and left.answer.startswith("not a VWM event")
        assert queue.counts(session)["pending"] == 3


async def test_the_relay_drains_it_to_a_real_sink_in_order(factory) -> None:
    """Production's path: `eventing.relay.Relay` with a `Publisher` to K_SINK."""
    sink = Sink()
    server = SinkServer(sink)
    await server.start()
    box = outbox(factory)
    with transaction(factory) as session:  # written in a state change's transaction
        for seq in (1, 2, 3):
            add(session, job_started(seq))
    sink.answers.extend([400])  # the first is refused for good: a dead letter
    publisher = Publisher(PublisherSettings(sink=server.url, backoff_base_s=0.01))
    relay = Relay(box, publisher)
    try:
        relay.start()
        await relay.publish(job_started(4))  # wakes it
        async with asyncio.timeout(10):
            await relay.drained()
    finally:
        await relay.stop()
        await publisher.aclose()
        await server.stop()
    assert sink.ids == [job_started(seq).id for seq in (2, 3, 4)]
    [letter] = await box.dead_letters()
    assert (letter.event.id, letter.status) == (job_started(1).id, 400)
