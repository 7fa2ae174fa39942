"""The job event log: sequence numbers, replay after Last-Event-ID, live delivery, slow readers."""

import asyncio

import pytest

from eventing.job_events import JobEvent
from harness.event_log import EventLog


def test_sequence_numbers_start_at_one_without_gaps(tmp_path):
    log = EventLog("j1", tmp_path / "j1.jsonl")
    seqs = [log.append("text_delta", {"text": str(i)}).seq for i in range(5)]
    assert seqs == [1, 2, 3, 4, 5]
    assert [e.seq for e in log.events(after=3)] == [4, 5]


def test_log_is_persisted_and_reloads_identically(tmp_path):
    log = EventLog("j1", tmp_path / "j1.jsonl")
    written = [log.append("assistant_text", {"text": f"t{i}"}) for i in range(3)]
    log.close()
    loaded = EventLog.load("j1", tmp_path / "j1.jsonl")
    assert loaded.closed
    assert loaded.events() == written


async def _collect(log: EventLog, after: int) -> list[JobEvent]:
    return [event async for event in log.subscribe(after)]


async def test_subscriber_gets_backlog_then_live_events_exactly_once(tmp_path):
    log = EventLog("j1", tmp_path / "j1.jsonl")
    for i in range(3):
        log.append("text_delta", {"i": i})
    reader = asyncio.create_task(_collect(log, after=1))
    await asyncio.sleep(0)
    for i in range(3, 6):
        log.append("text_delta", {"i": i})
        await asyncio.sleep(0)
    log.close()
    received = await reader
    assert [e.seq for e in received] == [2, 3, 4, 5, 6]


async def test_slow_subscriber_never_blocks_the_writer_and_loses_nothing(tmp_path):
    log = EventLog("j1", tmp_path / "j1.jsonl", queue_size=4)
    received: list[int] = []

    async def slow_reader():
        async for event in log.subscribe(0):
            received.append(event.seq)
            await asyncio.sleep(0.001)

    reader = asyncio.create_task(slow_reader())
    await asyncio.sleep(0)
    for i in range(200):  # far more than the queue holds; append never awaits
        log.append("text_delta", {"i": i})
    log.close()
    await asyncio.wait_for(reader, 10)
    assert received == list(range(1, 201))


async def test_subscribing_to_a_closed_log_replays_and_ends(tmp_path):
    log = EventLog("j1", tmp_path / "j1.jsonl")
    log.append("result", {})
    log.close()
    assert [e.seq for e in await _collect(log, 0)] == [1]
    assert await _collect(log, 1) == []


def test_closed_log_refuses_appends(tmp_path):
    log = EventLog("j1", tmp_path / "j1.jsonl")
    log.close()
    with pytest.raises(RuntimeError):
        log.append("result", {})
