"""Publishing through the outbox (`eventing.publisher`, `eventing.relay`) to a real sink on a real
socket that decodes with `eventing.codec.from_http`: events arrive once and in order; a sink that
is down, or answers 503, gets them later without loss; a refusal is dead-lettered and the relay
moves on; a relay dropped mid-drain (a crash) loses nothing when a new one opens the same files;
settings are read once and refuse what cannot work."""

from __future__ import annotations

import asyncio
import sys
import time
from collections import deque
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from eventing.events import VwmEvent
from eventing.outbox import DeadLetter, FileOutbox, OutboxEntry
from eventing.publisher import Publisher, PublisherError, PublisherSettings, classify
from eventing.relay import Relay
from tests.eventing.test_outbox import job_event
from tests.support.event_sink import Sink, SinkServer
from tests.support.raw_server import raw_server, silent

ROOT = Path(__file__).resolve().parents[2]


def fast(sink: str, **changes: Any) -> PublisherSettings:
    """Test settings: small timeouts and backoffs, so every test is over in seconds."""
    settings = PublisherSettings(
        sink=sink, timeout_s=2.0, retries=3, backoff_base_s=0.01, backoff_cap_s=0.05
    )
    return replace(settings, **changes)


@pytest.fixture
async def sink():
    server = SinkServer(Sink())
    await server.start()
    yield server
    await server.stop()


async def started(directory, settings: PublisherSettings) -> Relay:
    relay = Relay(await FileOutbox.open(directory), Publisher(settings), batch=4)
    relay.start()
    return relay


async def finish(relay: Relay) -> None:
    async with asyncio.timeout(10):
        await relay.drained()
    await relay.stop()
    await relay.publisher.aclose()


@pytest.mark.parametrize("mode", ["binary", "structured"])
async def test_events_arrive_once_in_order_in_the_chosen_mode(tmp_path, sink, mode):
    relay = await started(tmp_path, fast(sink.url, mode=mode))
    events = [job_event(seq) for seq in range(1, 21)]
    for event in events:
        await relay.publish(event)
    await finish(relay)
    assert sink.sink.accepted == events  # the same events, decoded, in order, each once
    assert {arrival.mode for arrival in sink.sink.arrivals} == {mode}


async def test_publish_returns_without_waiting_for_the_sink(tmp_path, sink):
    sink.sink.hold = asyncio.Event()  # the sink takes the request and does not answer
    relay = await started(tmp_path, fast(sink.url, timeout_s=5.0))
    async with asyncio.timeout(1):
        for seq in range(1, 4):
            await relay.publish(job_event(seq))
        await sink.sink.held.wait()
    assert await relay.outbox.pending() == 3
    sink.sink.hold.set()
    await finish(relay)
    assert sink.sink.ids == [job_event(seq).id for seq in range(1, 4)]


async def test_a_sink_that_is_down_then_back_gets_everything_in_order(tmp_path, sink):
    relay = await started(tmp_path, fast(sink.url))
    await relay.publish(job_event(1))
    async with asyncio.timeout(10):
        await relay.drained()
    await sink.stop()  # nothing listens on the port now: connection refused
    for seq in range(2, 11):
        await relay.publish(job_event(seq))
    async with asyncio.timeout(5):
        while relay.failures < 5:  # noqa: ASYNC110 (tried, backed off, tried again)
            await asyncio.sleep(0.01)
    assert await relay.outbox.pending() == 9
    await sink.start()
    await finish(relay)
    assert sink.sink.ids == [job_event(seq).id for seq in range(1, 11)]


async def test_retried_answers_are_retried_until_accepted(tmp_path, sink):
    sink.sink.answers.extend([503, 429, 404, 500])
    relay = await started(tmp_path, fast(sink.url))
    await relay.publish(job_event(1))
    await relay.publish(job_event(2))
    await finish(relay)
    assert [(a.event.id, a.status) for a in sink.sink.arrivals] == [
        (job_event(1).id, 503),
        (job_event(1).id, 429),
        (job_event(1).id, 404),
        (job_event(1).id, 500),
        (job_event(1).id, 202),
        (job_event(2).id, 202),
    ]
    assert await relay.outbox.dead_letters() == []


async def test_a_refused_event_is_dead_lettered_with_the_answer_and_the_relay_moves_on(
    tmp_path, sink
):
    sink.sink.answers.extend([202, 400])
    relay = await started(tmp_path, fast(sink.url))
    for seq in (1, 2, 3):
        await relay.publish(job_event(seq))
    await finish(relay)
    assert [(a.event.id, a.status) for a in sink.sink.arrivals] == [
        (job_event(1).id, 202),
        (job_event(2).id, 400),  # once: a refusal is never retried
        (job_event(3).id, 202),
    ]
    [letter] = await relay.outbox.dead_letters()
    assert (letter.event.id, letter.status) == (job_event(2).id, 400)
    assert letter.event == sink.sink.arrivals[1].event  # the whole event, as it was sent
    assert "answered 400" in letter.answer


CRASHING_PUBLISHER = """
import asyncio, sys
from pathlib import Path
from eventing.events import VwmEvent
from eventing.outbox import DeadLetter, FileOutbox, OutboxEntry
from eventing.publisher import Publisher, PublisherSettings
from eventing.relay import Relay
from tests.eventing.test_outbox import job_event

async def main():
    settings = PublisherSettings(sink=sys.argv[2], timeout_s=30, backoff_base_s=0.01)
    relay = Relay(await FileOutbox.open(Path(sys.argv[1])), Publisher(settings))
    relay.start()
    for seq in range(1, 9):
        await relay.publish(job_event(seq))
    print("published", flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


async def test_a_publisher_killed_mid_drain_loses_nothing_when_its_files_are_reopened(
    tmp_path, sink
):
    sink.sink.hold, sink.sink.hold_from = asyncio.Event(), 2  # answer two, hold the third
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CRASHING_PUBLISHER, str(tmp_path), sink.url,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert child.stdout is not None
    try:
        async with asyncio.timeout(20):
            assert await child.stdout.readline() == b"published\n"
            await sink.sink.held.wait()
    finally:
        child.kill()  # SIGKILL with the third POST in flight: the sink has it, the outbox not
        await child.wait()
    sink.sink.hold.set()
    sink.sink.hold = None

    relay = await started(tmp_path, fast(sink.url))
    await finish(relay)
    ids = [job_event(seq).id for seq in range(1, 9)]
    arrived = [arrival.event.id for arrival in sink.sink.arrivals]
    # Every event came, in order, with its id; after the kill the outbox started again from its
    # last checkpoint: at least the one in flight came twice, at most all three sent before.
    assert arrived[:3] == ids[:3]
    again = len(arrived) - len(ids)
    assert 1 <= again <= 3 and arrived[3:] == ids[3 - again :]
    assert sink.sink.arrivals[2].event == sink.sink.arrivals[3 + again - 1].event  # the same event


async def test_concurrent_publishers_each_keep_their_order_at_the_sink(tmp_path, sink):
    relay = await started(tmp_path, fast(sink.url))

    async def job(name: str) -> None:
        for seq in range(1, 16):
            await relay.publish(job_event(seq, job=name))

    await asyncio.gather(*(job(f"job{n}") for n in range(4)))
    await finish(relay)
    assert len(sink.sink.ids) == 60
    for n in range(4):
        mine = [event_id for event_id in sink.sink.ids if event_id.startswith(f"job{n}.")]
        assert mine == [f"job{n}.{seq}" for seq in range(1, 16)]


async def test_stop_cuts_a_backoff_short(tmp_path):
    down = SinkServer(Sink())  # never started: connection refused
    relay = await started(tmp_path, fast(down.url, backoff_base_s=60, backoff_cap_s=60))
    await relay.publish(job_event(1))
    async with asyncio.timeout(5):
        while relay.failures < 1:  # noqa: ASYNC110 (a counter, no event to wait on)
            await asyncio.sleep(0.01)
    began = time.monotonic()
    await relay.stop()
    assert time.monotonic() - began < 1
    assert not relay.running
    assert await (await FileOutbox.open(tmp_path)).pending() == 1  # kept for the next relay
    await relay.publisher.aclose()


async def test_deliver_makes_bounded_attempts_and_says_how_it_ended(sink):
    sink.sink.answers.extend([503] * 10)
    async with Publisher(fast(sink.url, retries=2)) as publisher:
        result = await publisher.deliver(job_event(1))
        assert (result.outcome, result.status) == ("retry", 503)
        assert len(sink.sink.arrivals) == 3
        sink.sink.answers.clear()
        sink.sink.answers.extend([409, 202])
        assert (await publisher.deliver(job_event(2))).outcome == "sent"
        sink.sink.answers.extend([422])
        refused = await publisher.deliver(job_event(3))
        assert (refused.outcome, refused.status) == ("refused", 422)
        assert len(sink.sink.arrivals) == 6


async def test_an_attempt_that_gets_no_answer_in_time_is_retryable():
    with raw_server(silent) as server:
        async with Publisher(fast(server.url, timeout_s=0.3)) as publisher:
            began = time.monotonic()
            result = await publisher.attempt(job_event(1))
    assert (result.outcome, result.status) == ("retry", None)
    assert "no answer within 0.3 s" in result.answer
    assert time.monotonic() - began < 2


@pytest.mark.parametrize(
    ("status", "outcome"),
    [(200, "sent"), (202, "sent"), (204, "sent"), (404, "retry"), (408, "retry"),
     (409, "retry"), (429, "retry"), (500, "retry"), (503, "retry"), (400, "refused"),
     (401, "refused"), (403, "refused"), (413, "refused"), (415, "refused"), (301, "refused")],
)  # fmt: skip
def test_which_answers_are_retried(status, outcome):
    assert classify(status) == outcome


def test_settings_come_from_k_sink_or_an_explicit_sink():
    knative = PublisherSettings.from_env({"K_SINK": "http://broker-ingress.example/vwm/default"})
    assert knative.sink == "http://broker-ingress.example/vwm/default"
    assert (knative.mode, knative.timeout_s, knative.retries) == ("binary", 10.0, 8)
    explicit = PublisherSettings.from_env(
        {
            "K_SINK": "http://broker-ingress.example/vwm/default",
            "VWM_EVENT_SINK": "http://127.0.0.1:8080/v1/events",
            "VWM_EVENT_MODE": "structured",
            "VWM_EVENT_TIMEOUT_S": "2.5",
            "VWM_EVENT_RETRIES": "0",
            "VWM_EVENT_BACKOFF_S": "0.5",
            "VWM_EVENT_BACKOFF_CAP_S": "4",
        }
    )
    assert explicit == PublisherSettings(
        sink="http://127.0.0.1:8080/v1/events",
        mode="structured",
        timeout_s=2.5,
        retries=0,
        backoff_base_s=0.5,
        backoff_cap_s=4.0,
    )


@pytest.mark.parametrize(
    ("environ", "setting"),
    [
        ({}, "VWM_EVENT_SINK"),
        ({"K_SINK": "broker-ingress/vwm/default"}, "K_SINK"),
        ({"K_SINK": "http://b/", "VWM_EVENT_SINK": "ftp://example.com/x"}, "VWM_EVENT_SINK"),
        ({"K_SINK": "http://b/", "VWM_EVENT_MODE": "batched"}, "VWM_EVENT_MODE"),
        ({"K_SINK": "http://b/", "VWM_EVENT_TIMEOUT_S": "0"}, "VWM_EVENT_TIMEOUT_S"),
        ({"K_SINK": "http://b/", "VWM_EVENT_TIMEOUT_S": "nan"}, "VWM_EVENT_TIMEOUT_S"),
        ({"K_SINK": "http://b/", "VWM_EVENT_RETRIES": "1.5"}, "VWM_EVENT_RETRIES"),
        ({"K_SINK": "http://b/", "VWM_EVENT_RETRIES": "-1"}, "VWM_EVENT_RETRIES"),
        ({"K_SINK": "http://b/", "VWM_EVENT_BACKOFF_CAP_S": "1e9"}, "VWM_EVENT_BACKOFF_CAP_S"),
    ],
)
def test_settings_that_cannot_work_are_refused_once_with_the_setting_named(environ, setting):
    with pytest.raises(PublisherError) as caught:
        PublisherSettings.from_env(environ)
    assert (caught.value.code, caught.value.details["setting"]) == (
        "invalid_publisher_setting",
        setting,
    )
    assert caught.value.message.count(setting) == 1 or not environ


def test_backoff_grows_exponentially_with_full_jitter_up_to_the_cap():
    settings = PublisherSettings(sink="http://b/", backoff_base_s=0.1, backoff_cap_s=1.0)
    for retry, ceiling in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (80, 1.0)]:
        waits = [settings.backoff(retry) for _ in range(200)]
        assert all(0 <= wait <= ceiling for wait in waits)
        assert max(waits) > ceiling / 2  # jittered over the range, not stuck at its bottom
    assert deque([settings.backoff(1) for _ in range(50)]).count(settings.backoff(1)) < 50


class BrokenOutbox:
    """An `Outbox` whose storage fails (a full or vanished volume)."""

    async def append(self, event: VwmEvent) -> None:
        raise OSError(28, "No space left on device")

    async def peek(self, limit: int) -> list[OutboxEntry]:
        raise OSError(5, "Input/output error")

    async def mark_sent(self, entry: OutboxEntry) -> None: ...

    async def dead_letter(self, entry: OutboxEntry, *, status: int | None, answer: str) -> None: ...

    async def pending(self) -> int:
        return 1

    async def dead_letters(self) -> list[DeadLetter]:
        return []


async def test_storage_that_fails_is_the_callers_error_and_stops_the_relay(sink, caplog):
    relay = Relay(BrokenOutbox(), Publisher(fast(sink.url)))
    with pytest.raises(OSError, match="No space"):
        await relay.publish(job_event(1))  # not durable: the caller must know
    relay.start()
    with pytest.raises(RuntimeError, match="already started"):
        relay.start()
    with pytest.raises(RuntimeError, match="not running"):
        async with asyncio.timeout(5):
            await relay.drained()
    assert "the event relay stopped" in caplog.text
    await relay.stop()  # the failure was logged; stopping does not raise it again
    assert not relay.running
    await relay.publisher.aclose()
