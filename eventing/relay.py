"""Publishing with an outbox: `Relay.publish` appends an event to the `Outbox` (durable once it
returns) and wakes the relay's task, which drains the outbox to the sink through a `Publisher`,
oldest first, one event in flight at a time, so a consumer sees each outbox's events in order.
The caller never waits on the network.

What the task does with each answer: 2xx → marked sent; a refusal (other 4xx) → kept as a dead
letter with the answer, and the next event goes; no answer, 404, 408, 409, 429, 5xx → the event
stays first in line and the task waits (exponential backoff with jitter, capped) before trying
again, for as long as the sink stays down: the outbox exists so that an outage loses nothing.
After `PublisherSettings.retries` failed tries in a row it logs an error once per outage.

Waking: `publish` wakes the task; so does `wake()`, for an outbox that others append to (the
control plane's database outbox, where any transaction adds rows). With `poll_s` the task also
looks at the outbox every `poll_s` seconds when nothing woke it, so rows that another process or
a transaction it was not told about added leave too, at most `poll_s` late. `flush` sends what is
pending once, without a task (a process that may not live long enough for one).

Lifecycle: ``relay = Relay(outbox, publisher); relay.start()`` (in a running event loop), then
``await relay.stop()``: stops between events (or cuts a backoff wait short) within `grace_s`,
else cancels; an event whose POST was cut off is sent again by the next relay (at least once).
Used by the harness for its job events, and by the control plane over its database outbox
(`functions.outbox_relay`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from eventing.events import VwmEvent
from eventing.outbox import Outbox, OutboxEntry
from eventing.publisher import Attempt, Publisher

log = logging.getLogger(__name__)

BATCH = 100  # entries read from the outbox at a time; sent one by one


class Relay:
    def __init__(
        self,
        outbox: Outbox,
        publisher: Publisher,
        *,
        batch: int = BATCH,
        poll_s: float | None = None,
    ) -> None:
        if poll_s is not None and not poll_s > 0:
            raise ValueError(f"poll_s must be above 0 seconds (or None: no polling), got {poll_s}")
        self.outbox = outbox
        self.publisher = publisher
        self._batch = batch
        self._poll_s = poll_s
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.failures = 0  # failed tries in a row; 0 while the sink answers

    async def publish(self, event: VwmEvent) -> None:
        """Durably queue `event` for the sink and return; the relay's task sends it."""
        await self.outbox.append(event)
        self._wake.set()

    def wake(self) -> None:
        """Look at the outbox now: something was appended to it other than through `publish`.
        Cheap and safe to call any number of times, before `start` or after `stop` too (from
        the relay's event loop; another thread uses ``loop.call_soon_threadsafe(relay.wake)``)."""
        self._wake.set()

    def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("this relay was already started; make a new one")
        self._task = asyncio.create_task(self._run(), name="eventing-relay")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop the task: at once when idle or waiting out a backoff, after the event in flight
        otherwise (at most `grace_s` seconds, then it is cancelled). Never raises: a task that
        died of a storage failure already logged it."""
        if self._task is None:
            return
        self._stopping.set()
        self._wake.set()
        done, _ = await asyncio.wait({self._task}, timeout=grace_s)
        if not done:
            self._task.cancel()
            await asyncio.wait({self._task})
        if not self._task.cancelled():
            self._task.exception()  # a storage failure was logged when it happened

    async def drained(self) -> None:
        """Wait until nothing is pending (for tests and shutdown; polls the outbox)."""
        while await self.outbox.pending():
            if not self.running:
                raise RuntimeError("the relay is not running: nothing will drain the outbox")
            await asyncio.sleep(0.01)

    async def wait(self) -> None:
        """Until the task ends (stopped, or died of a storage failure: see `running`)."""
        if self._task is not None:
            await asyncio.wait({self._task})

    async def flush(self, limit: int = BATCH) -> int:
        """Send up to `limit` pending events once, oldest first, as the task would, and return
        how many left the outbox (sent or dead-lettered). Stops at the first event the sink did
        not take for now (it stays first in line; no backoff wait). Not while the task runs on
        the same outbox: both would send the same events (duplicates, not losses)."""
        done = 0
        for entry in await self.outbox.peek(limit):
            if await self._send(entry) is not None:
                break
            done += 1
        return done

    async def _run(self) -> None:
        try:
            await self._drain()
        except Exception:
            # The outbox's storage failed (disk full, files changed under it): nothing is lost,
            # but nothing leaves either until a new relay runs; `running` turns False.
            log.exception("the event relay stopped: the outbox could not be read or updated")
            raise

    async def _drain(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()  # before peeking: an append after this wakes the next wait
            entries = await self.outbox.peek(self._batch)
            if not entries:
                await self._idle()
                continue
            for entry in entries:
                if self._stopping.is_set():
                    return
                result = await self._send(entry)
                if result is not None:
                    await self._back_off(result.status, result.answer)
                    break

    async def _idle(self) -> None:
        """Until woken (or `poll_s` passed: look again anyway)."""
        if self._poll_s is None:
            await self._wake.wait()
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), self._poll_s)

    async def _send(self, entry: OutboxEntry) -> Attempt | None:
        """One attempt at `entry`: None when it left the outbox, else the attempt that failed
        (the entry stays first in line)."""
        result = await self.publisher.attempt(entry.event)
        if result.outcome == "sent":
            await self.outbox.mark_sent(entry)
        elif result.outcome == "refused":
            log.error(
                "event refused by the sink: kept as a dead letter",
                extra={
                    "event_id": entry.event.id,
                    "event_type": entry.event.type,
                    "status": result.status,
                    "answer": result.answer[:500],
                },
            )
            await self.outbox.dead_letter(entry, status=result.status, answer=result.answer)
        else:
            return result
        self.failures = 0
        return None

    async def _back_off(self, status: int | None, answer: str) -> None:
        self.failures += 1
        settings = self.publisher.settings
        if self.failures == settings.retries + 1:
            log.error(
                "the event sink has not taken an event for %d tries: events wait in the outbox; "
                "check that the broker at the sink URL is up",
                self.failures,
                extra={"sink": settings.sink, "status": status, "answer": answer[:500]},
            )
        # The stop event cuts the wait short; a new append does not (the sink is still down).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), settings.backoff(self.failures))
