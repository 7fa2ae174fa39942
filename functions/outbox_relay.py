"""In production, the control plane's outbox (`vwm.outbox`) leaves for the Knative Broker here.

Code that changes state writes its event to `vwm.outbox` in the same transaction
(`functions.broker.outbox.add`). In `vwm up` the embedded broker moves those rows into its own
queue (`functions.broker.service`); in production nothing else reads the table, so each
function's app runs an `OutboxRelay` while it is up: an `eventing.relay.Relay` over the table
(`TableOutbox`) and an `eventing.publisher.Publisher` to ``VWM_EVENT_SINK`` or ``K_SINK``.

- Started by `functions.api.build_app`'s lifespan through `relaying`, when a sink is configured
  and the app is not `vwm up`'s (whose broker drains the table: never both); stopped at shutdown
  within a bound. Found by the events function's tick as ``services.outbox_relay``.
- Woken at once when a transaction of this app that added outbox rows commits (a SQLAlchemy
  ``after_commit`` hook on the app's session factory: no caller has to remember), and every
  ``VWM_OUTBOX_POLL_S`` seconds otherwise, for rows another replica or function added.
- A function scales to zero, so a row may be added while no replica of that function is up to
  send it: the ``dev.vwm.tick`` (a PingSource) wakes the events function, which drains what is
  pending before answering (`drain_on_tick`, bounded by time and count).
- The relay dies when the database fails under it (`Relay` stops on a storage error); the
  supervisor here starts a new one after a backoff, so an outage of the database delays events
  and never stops them for the life of the replica.

Several replicas (and functions) drain the same table at once: each sends the pending rows in
`seq` order and deletes a row once the sink took it. Two of them may send the same row (both read
it before either deleted it): at least once, and consumers deduplicate by (`source`, `id`), as
they must anyway. Nothing is lost (a row is deleted only after a 2xx, by whoever got it) and
nothing is stuck: completing a row another replica already completed is a no-op. Order: one relay sends in `seq` order; with several, the consumer sees each event's first
copy in `seq` order too, except that on PostgreSQL transactions that commit close together may
become visible out of `seq` order (docs/events.md, "Publishing").

This module sits below `functions.services` (it takes the app's services structurally, as
`AppServices`), so `functions.api` may start it and `functions.services` may name it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from functions.errors import FunctionsError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from eventing.events import VwmEvent
    from eventing.outbox import DeadLetter, OutboxEntry
    from eventing.publisher import Publisher, PublisherSettings
    from eventing.relay import Relay

log = logging.getLogger(__name__)

T = TypeVar("T")

POLL_ENV = "VWM_OUTBOX_POLL_S"
# What one tick may spend draining before the events function answers it: well within the
# delivery timeout of a Knative Trigger, and enough for a backlog of a quiet hour.
TICK_MAX_EVENTS = 500
TICK_MAX_S = 5.0
STOP_GRACE_S = 5.0  # at shutdown: the event in flight may finish, then the relay is cancelled
RESTART_CAP_S = 30.0  # longest wait before a relay that the database stopped is started again
_ADDED = "vwm_outbox_added"  # Session.info flag: this transaction wrote outbox rows


class OutboxRelaySettingError(FunctionsError, ValueError):
    """``VWM_OUTBOX_POLL_S`` cannot work; the message says what it must be. Raised at start-up
    (the app does not start: a deployment problem, 500 should an edge report it)."""

    code = "invalid_outbox_setting"


class AppServices(Protocol):
    """What the relay needs of `functions.services.Services` (structural: no import upward)."""

    outbox_relay: OutboxRelay | None

    @property
    def session_factory(self) -> sessionmaker[Any]: ...

    async def db(self, fn: Callable[..., T], *args: Any) -> T: ...


@dataclass(frozen=True)
class OutboxRelaySettings:
    """`publisher`: where to and how (``VWM_EVENT_SINK`` or ``K_SINK``, ``VWM_EVENT_*``);
    `poll_s`: seconds between looks at the table when nothing woke the relay."""

    publisher: PublisherSettings
    poll_s: float = 1.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OutboxRelaySettings | None:
        """None when no sink is configured (nothing to relay to); raises `PublisherError` or
        `OutboxRelaySettingError` for a setting that cannot work."""
        env = os.environ if environ is None else environ
        if not (env.get("VWM_EVENT_SINK") or env.get("K_SINK")):
            return None
        from eventing.publisher import PublisherSettings

        raw = (env.get(POLL_ENV) or "").strip()
        try:
            poll_s = float(raw) if raw else 1.0
        except ValueError:
            poll_s = math.nan
        if not (math.isfinite(poll_s) and 0 < poll_s <= 3600):
            raise OutboxRelaySettingError(
                f"{POLL_ENV} must be a number of seconds above 0 and at most 3600, got {raw[:50]!r}"
            )
        return cls(publisher=PublisherSettings.from_env(env), poll_s=poll_s)


class TableOutbox:
    """An `eventing.outbox.Outbox` over `vwm.outbox` that several relays may drain at once:
    `peek` reads pending rows in `seq` order; `mark_sent` deletes the row and `dead_letter`
    marks it dead, each a no-op when another relay completed the row first. A row that is not a
    VWM event (written by something else) becomes a dead letter when read, instead of stopping
    the relay. `run` runs a unit of work in a thread (`Services.db`)."""

    def __init__(self, run: Callable[..., Any]) -> None:
        self._run = run
        self._lock = asyncio.Lock()  # FIFO: appends through this object keep the calls' order

    async def append(self, event: VwmEvent) -> None:
        async with self._lock:
            await self._run(add_event, event)

    async def peek(self, limit: int) -> list[OutboxEntry]:
        from eventing.outbox import OutboxEntry

        return [OutboxEntry(event, seq) for seq, event in await self._run(_pending, limit)]

    async def mark_sent(self, entry: OutboxEntry) -> None:
        await self._run(_delete, entry.position)

    async def dead_letter(self, entry: OutboxEntry, *, status: int | None, answer: str) -> None:
        await self._run(_kill, entry.position, status, answer)

    async def pending(self) -> int:
        return int(await self._run(_count_pending))

    async def dead_letters(self) -> list[DeadLetter]:
        """Every dead letter kept, oldest first (for operators and tests)."""
        return list(await self._run(_dead_letters))


class OutboxRelay:
    """One app's relay of `vwm.outbox` to the sink. ``relay = OutboxRelay(services, settings)``;
    ``relay.start()`` in the app's event loop; `wake()`; `drain_now()`; ``await relay.stop()``."""

    def __init__(self, services: AppServices, settings: OutboxRelaySettings) -> None:
        from eventing.publisher import Publisher

        self.settings = settings
        self.outbox = TableOutbox(services.db)
        self.publisher: Publisher = Publisher(settings.publisher)
        self._services = services
        self._relay: Relay | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._unwatch: Callable[[], None] | None = None
        self.restarts = 0  # relays started again after the database stopped one

    @property
    def running(self) -> bool:
        return self._relay is not None and self._relay.running

    def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("this outbox relay was already started; make a new one")
        loop = asyncio.get_running_loop()

        def added() -> None:  # in the worker thread that committed
            with contextlib.suppress(RuntimeError):  # the loop closed: nothing left to wake
                loop.call_soon_threadsafe(self.wake)

        self._unwatch = watch_commits(self._services.session_factory, added)
        self._task = loop.create_task(self._supervise(), name="outbox-relay")

    def wake(self) -> None:
        """Look at the table now (rows were added). Safe at any time, from the app's loop."""
        if self._relay is not None:
            self._relay.wake()

    async def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Stop within about `grace_s`: the event in flight may finish; one cut off is sent
        again later (at least once). Closes the publisher. Never raises; idempotent."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        if self._relay is not None:
            await self._relay.stop(grace_s)
        if self._task is not None:
            await asyncio.wait({self._task}, timeout=1.0)  # it ends once its relay did
            if not self._task.done():
                self._task.cancel()
                await asyncio.wait({self._task})
            if not self._task.cancelled() and (failure := self._task.exception()) is not None:
                log.error("the outbox relay's supervisor failed", exc_info=failure)
        await self.publisher.aclose()

    async def drain_now(
        self, *, max_events: int = TICK_MAX_EVENTS, max_s: float = TICK_MAX_S
    ) -> int:
        """Send what is pending before returning, within `max_s` seconds: through the running
        relay (woken, then waited for), or when none runs (stopped, or being restarted after a
        database failure) by one pass of up to `max_events` events. Returns how many events are
        still pending (those the sink did not take yet wait for the relay or the next tick)."""
        deadline = time.monotonic() + max_s
        if self.running:
            self.wake()
            while (left := await self.outbox.pending()) and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
                if not self.running:
                    break
            else:
                return left
        from eventing.relay import Relay

        once = Relay(self.outbox, self.publisher)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(deadline - time.monotonic(), 0.1)):
                await once.flush(max_events)
        return await self.outbox.pending()

    async def _supervise(self) -> None:
        from eventing.relay import Relay

        while not self._stopping.is_set():
            relay = Relay(self.outbox, self.publisher, poll_s=self.settings.poll_s)
            self._relay = relay
            relay.start()
            await relay.wait()
            await relay.stop()  # collects the storage failure it died of (already logged)
            if self._stopping.is_set():
                return
            self.restarts += 1
            delay = min(RESTART_CAP_S, self.settings.publisher.backoff(self.restarts) + 0.1)
            log.warning(
                "the outbox relay stopped (the database failed): starting a new one",
                extra={"restarts": self.restarts, "delay_s": round(delay, 2)},
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)


@contextlib.asynccontextmanager
async def relaying(services: AppServices, *, enabled: bool = True) -> AsyncIterator[None]:
    """For an app's lifespan: while inside, `services` relay their outbox to the configured
    sink (``services.outbox_relay`` set), when `enabled` and a sink is configured; else
    nothing runs and ``services.outbox_relay`` stays None. Raises a setting's error at entry."""
    settings = OutboxRelaySettings.from_env() if enabled else None
    if settings is None:
        yield
        return
    relay = OutboxRelay(services, settings)
    relay.start()
    services.outbox_relay = relay
    log.info(
        "relaying the outbox to the event sink",
        extra={"sink": settings.publisher.sink, "poll_s": settings.poll_s},
    )
    try:
        yield
    finally:
        services.outbox_relay = None
        await relay.stop()


async def drain_on_tick(relay: OutboxRelay | None) -> None:
    """The tick's share (`functions.events`): send what is pending before answering, bounded
    (`OutboxRelay.drain_now`). No-op without a relay (no sink configured, or `vwm up`, whose
    broker drains the table). Never raises: the tick's own work must not fail for this."""
    if relay is None:
        return
    try:
        left = await relay.drain_now()
    except Exception:
        log.exception("the tick could not drain the outbox; the relay and the next tick retry")
        return
    if left:
        log.warning("events still wait in the outbox after the tick", extra={"pending": left})


# -- the table: units of work, run in a worker thread in one transaction each ------------------


def add_event(session: Session, event: VwmEvent) -> None:
    """Write `event` to `vwm.outbox` in the caller's transaction (the one row insert; callers
    use `functions.broker.outbox.add`)."""
    from eventing import codec
    from functions.db.columns import utcnow
    from functions.db.models import OutboxEvent, OutboxState

    body = codec.to_structured(event)[1].decode("utf-8")
    row = OutboxEvent(source=event.source, id=event.id, type=event.type, body=body)
    row.state, row.created_at = OutboxState.PENDING, utcnow()
    session.add(row)
    session.flush()


def _pending(session: Session, limit: int) -> list[tuple[int, VwmEvent]]:
    from sqlalchemy import select

    from eventing.events import EventError
    from functions.db.models import OutboxEvent, OutboxState

    rows = session.execute(
        select(OutboxEvent.seq, OutboxEvent.body)
        .where(OutboxEvent.state == OutboxState.PENDING)
        .order_by(OutboxEvent.seq)
        .limit(limit)
    ).all()
    entries = []
    for seq, body in rows:
        try:
            entries.append((seq, _decode(body)))
        except EventError as exc:  # written by something else: keep it aside, go on
            log.error("an outbox row is not a VWM event: kept as a dead letter", extra={"seq": seq})
            _kill(session, seq, None, f"not a VWM event: {exc.message}")
    return entries


def _delete(session: Session, seq: int) -> None:
    from sqlalchemy import delete

    from functions.db.models import OutboxEvent

    # Already gone: another relay sent it first (a duplicate the consumer drops).
    session.execute(delete(OutboxEvent).where(OutboxEvent.seq == seq))


def _kill(session: Session, seq: int, status: int | None, answer: str) -> None:
    from sqlalchemy import update

    from eventing.outbox import MAX_ANSWER_CHARS
    from functions.db.columns import utcnow
    from functions.db.models import OutboxEvent, OutboxState

    # Only a pending row: one another relay delivered (deleted) or killed stays as it is.
    session.execute(
        update(OutboxEvent)
        .where(OutboxEvent.seq == seq, OutboxEvent.state == OutboxState.PENDING)
        .values(
            state=OutboxState.DEAD,
            status=status,
            answer=answer[:MAX_ANSWER_CHARS],
            dead_at=utcnow(),
        )
    )


def _count_pending(session: Session) -> int:
    from sqlalchemy import func, select

    from functions.db.models import OutboxEvent, OutboxState

    count = session.scalar(
        select(func.count())
        .select_from(OutboxEvent)
        .where(OutboxEvent.state == OutboxState.PENDING)
    )
    return int(count or 0)


def _dead_letters(session: Session) -> list[DeadLetter]:
    from sqlalchemy import select

    from eventing.events import EventError
    from eventing.outbox import DeadLetter
    from functions.db.columns import utcnow
    from functions.db.models import OutboxEvent, OutboxState

    rows = session.execute(
        select(OutboxEvent).where(OutboxEvent.state == OutboxState.DEAD).order_by(OutboxEvent.seq)
    ).scalars()
    letters = []
    for row in rows:
        with contextlib.suppress(EventError):  # a row that never was an event: nothing to show
            at: datetime = row.dead_at or utcnow()
            letters.append(DeadLetter(_decode(row.body), row.status, row.answer or "", at))
    return letters


def _decode(body: str) -> VwmEvent:
    from eventing import codec

    return codec.from_http({"content-type": codec.STRUCTURED_CONTENT_TYPE}, body.encode("utf-8"))


def watch_commits(factory: sessionmaker[Any], added: Callable[[], None]) -> Callable[[], None]:
    """Call `added` after each commit of a session from `factory` that wrote outbox rows (in the
    committing thread). Returns what removes the hooks."""
    from sqlalchemy import event

    from functions.db.models import OutboxEvent

    def flushed(session: Session, _flush_context: Any) -> None:
        if any(isinstance(row, OutboxEvent) for row in session.new):
            session.info[_ADDED] = True

    def committed(session: Session) -> None:
        if session.info.pop(_ADDED, False):
            added()

    def rolled_back(session: Session) -> None:
        session.info.pop(_ADDED, None)

    hooks = (("after_flush", flushed), ("after_commit", committed), ("after_rollback", rolled_back))
    for name, hook in hooks:
        event.listen(factory, name, hook)

    def unwatch() -> None:
        for name, hook in hooks:
            event.remove(factory, name, hook)

    return unwatch
