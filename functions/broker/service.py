"""The embedded broker of `vwm up`, built and run as one thing: `BrokerService`.

`create_app`'s lifespan (`functions.embedded`) makes one over the app's `Services`
(`BrokerService.for_services`: their database; their binding for the tasks it runs, so the
`events` function it delivers to reaches the same services), `start`s it, puts it on
``app.state.broker`` (where `POST /v1/broker` finds it to enqueue and `notify`), and `stop`s
it at exit. It runs three tasks:

- the `Dispatcher` (delivery loop) over the subscriptions (`builtin_subscriptions` by default)
  and the user subscriptions of `vwm.subscriptions`, read from the table in each transaction
  that routes or delivers (`functions.broker.user_subscriptions`);
- the outbox drain: moves the control plane's own events from `vwm.outbox` into the queue
  (`functions.broker.outbox.drain_to_queue`) when notified and on every poll;
- the tick: every ``VWM_TICK_S`` seconds a ``dev.vwm.tick`` event through the broker, so the
  `events` function's reconciler runs as any delivery does (in production a PingSource does it).

Settings (docs/control-plane.md): ``VWM_BROKER_POLL_S``, ``VWM_BROKER_CONCURRENCY``,
``VWM_BROKER_LEASE_S``, ``VWM_BROKER_RETENTION_S``, ``VWM_TICK_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Self

import httpx
from sqlalchemy.orm import Session

from eventing.events import CONTROL_PLANE_SOURCE, Tick, VwmEvent, new_event
from eventing.tls import verified_context
from functions.broker.dispatcher import Dispatcher, DispatcherSettings
from functions.broker.outbox import drain_to_queue
from functions.broker.queue import DeadDelivery, Route, Run, counts, dead_letters, enqueue
from functions.broker.subscriptions import Subscription, builtin_subscriptions
from functions.broker.user_subscriptions import (
    all_routes,
    drain_routed,
    user_subscriptions,
)
from functions.db.group_commit import GroupCommit
from functions.errors import FunctionsError
from functions.outbox_relay import TableOutbox, watch_commits

if TYPE_CHECKING:
    from functions.services import Services

log = logging.getLogger(__name__)

OUTBOX_BATCH = 100


class BrokerSettingError(FunctionsError, ValueError):
    """A broker setting that cannot work; the message names the variable to fix. A deployment
    problem (a 500 should an edge report it); still a ValueError for callers that catch those."""

    code = "invalid_broker_setting"


@dataclass(frozen=True)
class BrokerSettings:
    poll_s: float = 1.0
    concurrency: int = 4
    lease_s: float = 30.0
    retention_s: float = 86_400.0
    tick_s: float = 30.0  # 0: no tick
    # Deliveries in flight at once to the long-running subscribers (prompt requests to the
    # sessions' harnesses, each for as long as its job runs): about the sessions working at once.
    long_concurrency: int = 64

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        env = os.environ if environ is None else environ
        settings = cls(
            poll_s=_number(env, "VWM_BROKER_POLL_S", 1.0),
            concurrency=int(_number(env, "VWM_BROKER_CONCURRENCY", 4, whole=True)),
            lease_s=_number(env, "VWM_BROKER_LEASE_S", 30.0),
            retention_s=_number(env, "VWM_BROKER_RETENTION_S", 86_400.0),
            tick_s=_number(env, "VWM_TICK_S", 30.0),
            long_concurrency=int(_number(env, "VWM_BROKER_PROMPT_CONCURRENCY", 64, whole=True)),
        )
        try:
            settings.dispatcher()
            settings.long_dispatcher()
        except ValueError as exc:
            name = str(exc).split(" ", 1)[0]
            variable = {
                "poll_s": "VWM_BROKER_POLL_S",
                "concurrency": "VWM_BROKER_CONCURRENCY",
                "long_concurrency": "VWM_BROKER_PROMPT_CONCURRENCY",
                "lease_s": "VWM_BROKER_LEASE_S",
                "retention_s": "VWM_BROKER_RETENTION_S",
            }.get(name, name)
            message = str(exc).replace(name, variable, 1)
            raise BrokerSettingError(message) from None
        if settings.tick_s < 0:
            raise BrokerSettingError(f"VWM_TICK_S must be 0 (off) or more, got {settings.tick_s}")
        return settings

    def dispatcher(self) -> DispatcherSettings:
        return DispatcherSettings(
            poll_s=self.poll_s,
            concurrency=self.concurrency,
            lease_s=self.lease_s,
            retention_s=self.retention_s,
        )

    def long_dispatcher(self) -> DispatcherSettings:
        if not 1 <= self.long_concurrency <= 1000:
            raise ValueError(f"long_concurrency must be 1..1000, got {self.long_concurrency}")
        return replace(self.dispatcher(), concurrency=self.long_concurrency)


class BrokerService:
    """``service = BrokerService(run)``; ``await service.start()``; ``service.notify()`` after
    an enqueue of this process; ``await service.publish(event)``; ``await service.stop()``."""

    def __init__(
        self,
        run: Run,
        subscriptions: Sequence[Subscription] | None = None,
        settings: BrokerSettings | None = None,
        services: Services | None = None,
        *,
        with_user_subscriptions: bool = True,
    ) -> None:
        """`services`: bound in the broker's tasks (and so in the in-process subscribers it
        calls); None: they see whatever is bound where `start` is called.
        `with_user_subscriptions`: also route to the table `vwm.subscriptions`."""
        self._run = run
        self._services = services
        self.settings = settings or BrokerSettings()
        self.subscriptions = (
            list(subscriptions) if subscriptions is not None else builtin_subscriptions()
        )
        # One pool for every HTTP subscriber and dead-letter sink; no proxy from the environment.
        self._client = httpx.AsyncClient(trust_env=False, verify=verified_context())
        self.with_user_subscriptions = with_user_subscriptions
        long_running = [s.name for s in self.subscriptions if s.long_running]
        self.dispatcher = Dispatcher(
            run,
            self.subscriptions,
            self.settings.dispatcher(),
            client=self._client,
            more_subscriptions=user_subscriptions if with_user_subscriptions else None,
            exclude=long_running,
        )
        # The loop of the deliveries that last as long as a job (see `Subscription`).
        self.long_dispatcher = (
            Dispatcher(
                run,
                self.subscriptions,
                self.settings.long_dispatcher(),
                client=self._client,
                only=long_running,
                prunes=False,
            )
            if long_running
            else None
        )
        self.outbox = TableOutbox(run)
        # Events posted at once (harnesses streaming) are queued in shared transactions.
        self._queueing: GroupCommit[VwmEvent, bool] = GroupCommit(run, self._enqueue_batch)
        self._outbox_wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._unwatch: Callable[[], None] | None = None

    @classmethod
    def for_services(cls, services: Services) -> BrokerService:
        """The broker of `vwm up`: the app's database, the built-in subscriptions, settings from
        the environment."""
        return cls(services.db, settings=BrokerSettings.from_env(), services=services)

    async def start(self) -> None:
        # Tasks copy the context they are created in: bind the services before creating them.
        from functions.services import bound

        with bound(self._services) if self._services else contextlib.nullcontext():
            for dispatcher in self._dispatchers:
                dispatcher.start()
            if self._services is not None:
                # A commit that wrote outbox rows (a prompt request, a session's event) wakes
                # the drain at once rather than at its next poll.
                loop = asyncio.get_running_loop()

                def added() -> None:
                    with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                        loop.call_soon_threadsafe(self._outbox_wake.set)

                self._unwatch = watch_commits(self._services.session_factory, added)
            self._tasks.append(asyncio.create_task(self._drain_outbox(), name="broker-outbox"))
            if self.settings.tick_s > 0:
                self._tasks.append(asyncio.create_task(self._tick(), name="broker-tick"))
        log.info(
            "embedded broker started",
            extra={
                "subscriptions": [subscription.name for subscription in self.subscriptions],
                "tick_s": self.settings.tick_s,
            },
        )

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop the tick and the outbox drain at once, the deliveries within `grace_s`."""
        self._stopping.set()
        self._outbox_wake.set()
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)
        await asyncio.gather(*(dispatcher.stop(grace_s) for dispatcher in self._dispatchers))
        await self._client.aclose()

    @property
    def _dispatchers(self) -> list[Dispatcher]:
        return [self.dispatcher, *([self.long_dispatcher] if self.long_dispatcher else [])]

    def notify(self) -> None:
        """An event was enqueued (or added to the outbox) by this process: deliver it now."""
        self._outbox_wake.set()
        self._wake_dispatchers()

    def _wake_dispatchers(self) -> None:
        for dispatcher in self._dispatchers:
            dispatcher.notify()

    async def enqueue(self, event: VwmEvent) -> bool:
        """Queue `event` for its subscriptions (False: already queued) and wake the loop."""
        queued = await self._queueing.submit(event)
        if queued:
            for dispatcher in self._dispatchers:
                dispatcher.notify(event)
        return queued

    async def publish(self, event: VwmEvent) -> None:
        """For code of the control plane that publishes outside a transaction of its own: the
        event is in the database when this returns, and delivered by the loop."""
        await self.enqueue(event)

    async def status(self) -> dict[str, int]:
        """Deliveries by state, events stored and outbox rows pending."""
        result = await self._run(counts)
        result["outbox_pending"] = await self.outbox.pending()
        return result

    async def dead_letters(self, limit: int = 100) -> list[DeadDelivery]:
        """The newest dead deliveries first, with their events and last answers."""
        return await self._run(dead_letters, limit)

    def _enqueue_batch(self, session: Session, events: list[VwmEvent]) -> list[bool]:
        """Each event queued for its subscriptions, the user subscriptions read once for all."""
        routes: Sequence[Route] = self.subscriptions
        if self.with_user_subscriptions:
            routes = all_routes(session, routes)
        return [enqueue(session, event, routes) for event in events]

    @property
    def _drain(self) -> Callable[[Session, Sequence[Route], int], int]:
        return drain_routed if self.with_user_subscriptions else drain_to_queue

    async def _drain_outbox(self) -> None:
        failing = False
        while not self._stopping.is_set():
            self._outbox_wake.clear()
            try:
                moved = await self._run(self._drain, self.subscriptions, OUTBOX_BATCH)
            except Exception as exc:
                if not failing:
                    log.warning(
                        "could not move the outbox into the broker's queue: retrying",
                        extra={"error": type(exc).__name__},
                    )
                failing, moved = True, 0
            else:
                failing = False
            if moved:
                self._wake_dispatchers()
                if moved == OUTBOX_BATCH:
                    continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._outbox_wake.wait(), self.settings.poll_s)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.settings.tick_s)
            try:
                await self.publish(new_event(Tick(), source=CONTROL_PLANE_SOURCE))
            except Exception as exc:  # the database is down: the next tick tries again
                log.warning("could not publish a tick", extra={"error": type(exc).__name__})


def _number(env: Mapping[str, str], name: str, default: float, *, whole: bool = False) -> float:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = int(raw) if whole else float(raw)
    except ValueError:
        kind = "a whole number" if whole else "a number of seconds"
        raise BrokerSettingError(f"{name} must be {kind}, got {raw[:50]!r}") from None
    if not math.isfinite(value):
        raise BrokerSettingError(f"{name} must be a finite number, got {raw[:50]!r}")
    return value
