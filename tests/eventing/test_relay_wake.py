"""What wakes a relay besides its own `publish` (`eventing.relay.Relay.wake`, `poll_s`), and its
one-shot `flush`: over a real `FileOutbox`, to a real sink on a local port. Events appended to the
outbox behind the relay's back stay put until something wakes it; `wake()` sends them at once,
`poll_s` within a poll; `flush` sends what is pending without a task and stops at the first event
the sink does not take now."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from eventing.outbox import FileOutbox, OutboxEntry
from eventing.publisher import Publisher
from eventing.relay import Relay
from tests.eventing.test_outbox import job_event
from tests.eventing.test_publisher import fast
from tests.support.event_sink import Sink, SinkServer


@pytest.fixture
async def sink():
    server = SinkServer(Sink())
    await server.start()
    yield server
    await server.stop()


class Watched:
    """A `FileOutbox` that tells when a look found nothing pending (the relay then idles)."""

    def __init__(self, outbox: FileOutbox) -> None:
        self.outbox = outbox
        self.found_nothing = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.outbox, name)

    async def peek(self, limit: int) -> list[OutboxEntry]:
        entries = await self.outbox.peek(limit)
        if not entries:
            self.found_nothing.set()
        return entries


async def arrived(sink: SinkServer, count: int, within_s: float) -> list[str]:
    async with asyncio.timeout(within_s):
        while len(sink.sink.accepted) < count:  # noqa: ASYNC110 (the sink's list)
            await asyncio.sleep(0.01)
    return sink.sink.ids


async def test_rows_appended_behind_its_back_wait_for_wake_then_leave_in_order(tmp_path, sink):
    outbox = await FileOutbox.open(tmp_path)
    watched = Watched(outbox)
    relay = Relay(watched, Publisher(fast(sink.url)))  # type: ignore[arg-type]
    relay.start()
    await watched.found_nothing.wait()  # its first look found nothing: it waits to be woken
    try:
        events = [job_event(n) for n in range(1, 4)]
        for event in events:
            await outbox.append(event)  # as another writer would: the relay was not told
        await asyncio.sleep(0.3)
        assert sink.sink.arrivals == []  # no poll: nothing looked
        relay.wake()
        assert await arrived(sink, 3, within_s=5) == [event.id for event in events]
        async with asyncio.timeout(5):
            await relay.drained()  # the sink answers before the relay moves its cursor
    finally:
        await relay.stop()
        await relay.publisher.aclose()


async def test_with_poll_s_it_finds_rows_nobody_told_it_about(tmp_path, sink):
    outbox = await FileOutbox.open(tmp_path)
    watched = Watched(outbox)
    relay = Relay(watched, Publisher(fast(sink.url)), poll_s=0.1)  # type: ignore[arg-type]
    relay.start()
    try:
        await watched.found_nothing.wait()  # the task is idle, waiting
        event = job_event(1)
        await outbox.append(event)
        started = time.monotonic()
        assert await arrived(sink, 1, within_s=5) == [event.id]
        assert time.monotonic() - started < 1.0  # one poll, not a wake that never comes
    finally:
        await relay.stop()
        await relay.publisher.aclose()


async def test_stop_is_prompt_while_polling(tmp_path, sink):
    relay = Relay(await FileOutbox.open(tmp_path), Publisher(fast(sink.url)), poll_s=30)
    relay.start()
    await asyncio.sleep(0.05)
    started = time.monotonic()
    await relay.stop()
    await relay.publisher.aclose()
    assert time.monotonic() - started < 1.0
    assert not relay.running


async def test_flush_sends_once_dead_letters_refusals_and_stops_at_a_retry(tmp_path, sink):
    outbox = await FileOutbox.open(tmp_path)
    events = [job_event(n) for n in range(1, 5)]
    for event in events:
        await outbox.append(event)
    sink.sink.answers.extend([202, 400, 503])  # then 202: but flush does not try again
    async with Publisher(fast(sink.url)) as publisher:
        relay = Relay(outbox, publisher)
        assert await relay.flush() == 2
        assert sink.sink.ids == [events[0].id]
        assert [letter.event.id for letter in await outbox.dead_letters()] == [events[1].id]
        assert await outbox.pending() == 2  # the 503'd one is still first in line
        assert not relay.running
        assert await relay.flush(limit=1) == 1  # bounded by count
        assert await relay.flush() == 1
    assert sink.sink.ids == [events[0].id, events[2].id, events[3].id]


@pytest.mark.parametrize("poll_s", [0, -1.0])
def test_poll_s_must_be_positive(tmp_path, poll_s):
    with pytest.raises(ValueError, match="poll_s"):
        Relay(None, None, poll_s=poll_s)  # type: ignore[arg-type]
