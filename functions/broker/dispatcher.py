"""The embedded broker's delivery loop: claims due deliveries from the queue in the database,
hands each to its subscription's sink, and applies the subscription's `DeliveryPolicy` to the
answer (done; retry after Knative's backoff; or dead, after a POST to the dead-letter sink).

One asyncio task (`start`/`stop`) per process. It claims when woken by `notify` (an enqueue in
this process) or every `poll_s` (an enqueue in another process, a retry coming due), with at most
`concurrency` deliveries in flight. A claim is a lease in the database (`lease_s`), renewed while
the delivery runs: a loop that dies mid-delivery (SIGKILL) leaves the lease to expire and another
loop delivers the event again, so delivery is at least once. A clean `stop` gives the leases of
the deliveries it cut off back at once. Claims go oldest event first, so one subscription sees
first attempts in arrival order (not a guarantee: retries and parallel deliveries reorder, as in
Knative), except for an `ordered` subscription, which gets one delivery at a time, in order
(`claim_due`'s FIFO). Settled deliveries and their events are pruned after `retention_s`.

A loop may claim for some subscriptions only (`only`, `exclude`): the broker runs the deliveries
that last as long as an agent's job (prompt requests to a session's harness) in a loop of their
own, so they never hold the slots the other subscribers' deliveries need.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import heapq
import logging
import math
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from sqlalchemy.orm import Session

from eventing import tracing
from eventing.events import VwmEvent
from eventing.tls import verified_context
from functions.broker.delivery import Outcome
from functions.broker.queue import (
    Claimed,
    Route,
    Run,
    claim_due,
    enqueue,
    filter_view,
    mark_dead,
    mark_delivered,
    prune,
    release,
    renew_leases,
    schedule_retry,
)
from functions.broker.subscriptions import HttpSink, SinkResult, Subscription
from functions.db.columns import utcnow
from functions.db.group_commit import GroupCommit, each
from functions.metrics import DEAD_LETTERS, DELIVERY_RETRIES

log = logging.getLogger(__name__)

# Subscriptions that come and go, read in a transaction of the loop: (session, the shared HTTP
# client for their sinks) -> the subscriptions now.
MoreSubscriptions = Callable[[Session, httpx.AsyncClient], Sequence[Subscription]]

# Tries at the dead-letter sink (it is one more subscriber that may be down for a moment).
DEAD_LETTER_TRIES = 3
DEAD_LETTER_BACKOFF_S = 0.2
# Knative sends at most this much of the failed answer in `knativeerrordata`.
MAX_ERROR_DATA_BYTES = 1024


@dataclass(frozen=True)
class DispatcherSettings:
    """Seconds, except `concurrency`. `lease_s` is how long a claim holds a row without a
    renewal: how long after a crash a delivery waits to be made again."""

    poll_s: float = 1.0
    concurrency: int = 4
    lease_s: float = 30.0
    retention_s: float = 86_400.0
    prune_every_s: float = 300.0

    def __post_init__(self) -> None:
        for name in ("poll_s", "lease_s", "prune_every_s"):
            value = getattr(self, name)
            if not (0 < value <= 86_400 and math.isfinite(value)):
                raise ValueError(f"{name} must be above 0 and at most a day, got {value}")
        if not 1 <= self.concurrency <= 1000:
            raise ValueError(f"concurrency must be 1..1000, got {self.concurrency}")
        if not (self.retention_s >= 0 and math.isfinite(self.retention_s)):
            raise ValueError(f"retention_s must be 0 or more, got {self.retention_s}")


class Dispatcher:
    def __init__(
        self,
        run: Run,
        subscriptions: Sequence[Subscription],
        settings: DispatcherSettings | None = None,
        *,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], datetime] = utcnow,
        more_subscriptions: MoreSubscriptions | None = None,
        only: Collection[str] | None = None,
        exclude: Collection[str] = (),
        prunes: bool = True,
    ) -> None:
        """`more_subscriptions`: those that come and go (user subscriptions), read in each
        claim's transaction and in each settle that queues a reply; `subscriptions` are fixed.
        `only` / `exclude`: the subscriptions whose deliveries this loop claims (None: all) and
        those it leaves to another loop; `prunes`: this loop prunes settled deliveries (one
        loop of a process does)."""
        self._run_db = run
        self._settling: GroupCommit[tuple[int, int | None], None] = GroupCommit(
            run, each(_mark_delivered)
        )
        self.subscriptions = list(subscriptions)
        self._more = more_subscriptions
        self._by_name = {subscription.name: subscription for subscription in self.subscriptions}
        if len(self._by_name) != len(self.subscriptions):
            raise ValueError("subscription names must be unique")
        self.settings = settings or DispatcherSettings()
        self._owns_client = client is None
        # For dead-letter sinks; no proxy from the environment (local or cluster URLs).
        self._client = client or httpx.AsyncClient(trust_env=False, verify=verified_context())
        self._clock = clock
        self._only = frozenset(only) if only is not None else None
        self._exclude = frozenset(exclude)
        self._prunes = prunes
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._renewer: asyncio.Task[None] | None = None
        self._inflight: dict[int, asyncio.Task[None]] = {}
        # The last claim filled every free slot: more may be due, so a slot freed by a finished
        # delivery is worth another claim. Otherwise it is not (the claim got all that was due;
        # what comes due later wakes the loop itself), and waking for it would cost an empty
        # claim per delivery.
        self._saturated = False
        # The fixed subscriptions this loop claims for; with no subscriptions that come and go,
        # an event none of them takes does not wake it (`notify`).
        self._claims_for = [
            s
            for s in self.subscriptions
            if (self._only is None or s.name in self._only) and s.name not in self._exclude
        ]
        self._due: list[float] = []  # monotonic times of the retries this loop scheduled (a heap)
        self._db_down = False

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("this dispatcher was already started; make a new one")
        self._task = asyncio.create_task(self._loop(), name="broker-dispatcher")
        self._renewer = asyncio.create_task(self._renew_loop(), name="broker-lease-renewer")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def notify(self, event: VwmEvent | None = None) -> None:
        """Something was enqueued (`event`, when one is known): claim now rather than at the
        next poll, unless it is an event none of this loop's subscriptions takes."""
        if event is not None and self._more is None:
            view = filter_view(event)
            if not any(s.filter.matches(view) for s in self._claims_for):
                return
        self._wake.set()

    async def stop(self, grace_s: float = 5.0, *, release_leases: bool = True) -> None:
        """Stop claiming; let deliveries in flight finish for up to `grace_s`, then cut them
        off. Their leases are given back (`release_leases`), so the next loop delivers them at
        once; without that, they are delivered again once the lease expires. Never raises."""
        if self._task is None:
            return
        self._stopping.set()
        self._wake.set()
        await asyncio.wait({self._task})
        inflight = dict(self._inflight)
        cut: list[int] = []
        if inflight:
            _, pending = await asyncio.wait(set(inflight.values()), timeout=grace_s)
            cut = [delivery_id for delivery_id, task in inflight.items() if task in pending]
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.wait({self._renewer})
        if cut:
            log.warning(
                "broker stopped with deliveries in flight: they will be delivered again",
                extra={"deliveries": len(cut)},
            )
            if release_leases:
                with contextlib.suppress(Exception):
                    await self._run_db(release, cut)
        if self._owns_client:
            await self._client.aclose()

    # -- the loop ----------------------------------------------------------------------------

    async def _loop(self) -> None:
        last_prune = -math.inf
        while not self._stopping.is_set():
            self._wake.clear()
            free = self.settings.concurrency - len(self._inflight)
            claimed: list[tuple[Claimed, Subscription | None]] = []
            if free > 0:
                claimed = await self._claim(free)
                self._saturated = len(claimed) == free
            for item, subscription in claimed:
                self._spawn(item, subscription)
            if self._prunes and time.monotonic() - last_prune >= self.settings.prune_every_s:
                last_prune = time.monotonic()
                await self._prune()
            if claimed and len(claimed) == free:
                continue  # more may be due: claim again once a slot is free
            await self._sleep()

    async def _claim(self, limit: int) -> list[tuple[Claimed, Subscription | None]]:
        concurrent = {s.name for s in self.subscriptions if not s.ordered}
        try:
            claimed = await self._run_db(
                _claim_with_subscriptions,
                limit,
                self.settings.lease_s,
                self._clock(),
                concurrent,
                self._more,
                self._client,
                self.subscriptions,
                self._only,
                self._exclude,
            )
        except Exception as exc:
            if not self._db_down:
                log.warning(
                    "the broker cannot read its queue (the database failed): retrying every "
                    "poll; events wait in the database",
                    extra={"error": type(exc).__name__},
                )
            self._db_down = True
            return []
        if self._db_down:
            log.info("the broker reads its queue again")
            self._db_down = False
        return claimed

    async def _sleep(self) -> None:
        now = time.monotonic()
        while self._due and self._due[0] <= now:  # came due since: the claim just made saw it
            heapq.heappop(self._due)
        timeout = self.settings.poll_s
        if self._due:
            timeout = min(timeout, self._due[0] - now)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

    def _spawn(self, item: Claimed, subscription: Subscription | None) -> None:
        task = asyncio.create_task(
            self._deliver(item, subscription), name=f"broker-delivery-{item.delivery_id}"
        )
        self._inflight[item.delivery_id] = task

        # An ordered subscription's next delivery becomes claimable only now.
        unblocks = subscription is None or subscription.ordered

        def done(_: asyncio.Task[None]) -> None:
            self._inflight.pop(item.delivery_id, None)
            if self._saturated or unblocks:
                self._wake.set()  # a slot is free, and something may be waiting for it

        task.add_done_callback(done)

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.lease_s / 3)
            ids = list(self._inflight)
            if not ids:
                continue
            until = self._clock() + timedelta(seconds=self.settings.lease_s)
            try:
                await self._run_db(renew_leases, ids, until)
            except Exception as exc:
                log.warning(
                    "could not renew the leases of deliveries in flight",
                    extra={"error": type(exc).__name__, "deliveries": len(ids)},
                )

    async def _prune(self) -> None:
        cutoff = self._clock() - timedelta(seconds=self.settings.retention_s)
        try:
            pruned = await self._run_db(prune, cutoff)
        except Exception as exc:
            log.warning("could not prune the broker's queue", extra={"error": type(exc).__name__})
            return
        if pruned:
            log.info("pruned settled broker events", extra={"events": pruned})

    # -- one delivery ------------------------------------------------------------------------

    async def _deliver(self, item: Claimed, subscription: Subscription | None) -> None:
        context = {
            "subscription": item.subscription,
            "event_id": item.event.id,
            "event_type": item.event.type,
            "event_source": item.event.source,
            "attempt": item.attempts,
        }
        try:
            if subscription is None:
                # Its subscription was removed: nobody is left to deliver to.
                await self._run_db(
                    mark_dead, item.delivery_id, None, "no such subscription any more"
                )
                DEAD_LETTERS.inc()
                log.error("delivery dead: its subscription is gone", extra=context)
                return
            result = await self._attempt(subscription, item.event)
            decision = subscription.policy.decide(result.outcome, retries_done=item.attempts - 1)
            outcome = {**context, "status": result.status, "answer": result.answer[:500]}
            if decision.action == "done":
                await self._done(item, result)
                log.debug("event delivered", extra=outcome)
            elif decision.action == "retry":
                at = self._clock() + decision.delay
                await self._run_db(
                    schedule_retry, item.delivery_id, at, result.status, result.answer
                )
                DELIVERY_RETRIES.inc()
                heapq.heappush(self._due, time.monotonic() + decision.delay.total_seconds())
                log.info(
                    "delivery failed: retrying",
                    extra={**outcome, "retry_in_s": decision.delay.total_seconds()},
                )
            else:
                dead_letter = "none"
                if decision.action == "dead_letter" and subscription.policy.dead_letter_sink:
                    dead_letter = await self._send_dead_letter(subscription, item, result)
                if subscription.on_dead is not None:
                    await subscription.on_dead(item.event, result.answer)
                await self._run_db(mark_dead, item.delivery_id, result.status, result.answer)
                DEAD_LETTERS.inc()
                log.error(
                    "delivery dead: kept in vwm.broker_deliveries (state dead)",
                    extra={**outcome, "dead_letter_sink": dead_letter},
                )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # The outcome could not be recorded (the database failed): the lease expires and
            # the event is delivered again.
            log.warning(
                "could not record a delivery's outcome: it will be delivered again",
                extra={**context, "error": type(exc).__name__},
            )

    async def _attempt(self, subscription: Subscription, event: VwmEvent) -> SinkResult:
        try:
            # The delivery (its HTTP call, the events function's work) joins the event's trace.
            with tracing.continuing(event):
                return await subscription.sink.deliver(event)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a sink's own bug: count it as a failed attempt, retried
            log.exception("a broker sink failed", extra={"subscription": subscription.name})
            return SinkResult(Outcome.RETRY, None, f"the sink failed: {type(exc).__name__}")

    async def _done(self, item: Claimed, result: SinkResult) -> None:
        reply = result.reply if result.outcome is Outcome.REPLY else None
        if reply is not None and item.subscription not in self._by_name:
            # A user subscription's sink is anyone's: its reply could forge a harness's or the
            # control plane's event (what `POST /v1/events` keeps to admins). Not published.
            log.warning(
                "a user subscription's sink replied with an event: dropped",
                extra={"subscription": item.subscription, "event_id": reply.id},
            )
            reply = None
        if reply is None:  # the common case: deliveries answered together settle together
            await self._settling.submit((item.delivery_id, result.status))
            return
        routes: Sequence[Route] = self.subscriptions
        queued = await self._run_db(
            _settle_with_reply,
            item.delivery_id,
            result.status,
            reply,
            routes,
            self._more,
            self._client,
        )
        if queued:
            self.notify()

    async def _send_dead_letter(
        self, subscription: Subscription, item: Claimed, result: SinkResult
    ) -> str:
        """POST the event to the dead-letter sink with Knative's ``knativeerror*`` extensions;
        what happened, for the log line."""
        url = str(subscription.policy.dead_letter_sink)
        sink = HttpSink(url, self._client, timeout=subscription.policy.timeout)
        headers = {
            "ce-knativeerrordest": getattr(subscription.sink, "url", f"local:{subscription.name}"),
            "ce-knativeerrordata": base64.b64encode(
                result.answer.encode("utf-8")[:MAX_ERROR_DATA_BYTES]
            ).decode("ascii"),
        }
        if result.status is not None:
            headers["ce-knativeerrorcode"] = str(result.status)
        answer = SinkResult(Outcome.RETRY, None)
        for attempt in range(DEAD_LETTER_TRIES):
            if attempt:
                await asyncio.sleep(DEAD_LETTER_BACKOFF_S * 2 ** (attempt - 1))
            answer = await sink.deliver(item.event, extra_headers=headers)
            if answer.outcome in (Outcome.ACCEPTED, Outcome.REPLY):
                return f"sent ({answer.status})"
            if answer.outcome is Outcome.FAILED:
                break
        log.error(
            "the dead-letter sink did not take the event",
            extra={
                "subscription": subscription.name,
                "event_id": item.event.id,
                "status": answer.status,
                "answer": answer.answer[:500],
            },
        )
        return f"failed ({answer.status})"


def _mark_delivered(session: Session, delivery: tuple[int, int | None]) -> None:
    delivery_id, status = delivery
    mark_delivered(session, delivery_id, status)


def _settle_with_reply(
    session: Session,
    delivery_id: int,
    status: int | None,
    reply: VwmEvent | None,
    routes: Sequence[Route],
    more: MoreSubscriptions | None = None,
    client: httpx.AsyncClient | None = None,
) -> bool:
    """Mark delivered and, in the same transaction, queue the subscriber's reply event (Knative
    publishes a reply back into the broker). True when a reply was queued."""
    mark_delivered(session, delivery_id, status)
    if reply is None:
        return False
    if more is not None and client is not None:
        routes = [*routes, *more(session, client)]
    return enqueue(session, reply, routes)


def _claim_with_subscriptions(
    session: Session,
    limit: int,
    lease_s: float,
    now: datetime,
    concurrent: Collection[str],
    more: MoreSubscriptions | None,
    client: httpx.AsyncClient,
    fixed: Sequence[Subscription] = (),
    only: Collection[str] | None = None,
    exclude: Collection[str] = (),
) -> list[tuple[Claimed, Subscription | None]]:
    """Claim due deliveries and, in the same transaction, read the subscriptions that come and
    go, so each claimed delivery goes to its subscription as it is now (None: it is gone)."""
    claimed = claim_due(session, limit, lease_s, now, concurrent, only=only, exclude=exclude)
    if not claimed:
        return []
    found = {s.name: s for s in more(session, client)} if more is not None else {}
    found.update((s.name, s) for s in fixed)  # a fixed name is never shadowed
    return [(item, found.get(item.subscription)) for item in claimed]
