"""The control plane's outbox in the database (`vwm.outbox`): the transactional-outbox pattern.

Code that changes state and has an event to tell about it calls `add(session, event)` inside
the same transaction: the change and its event commit together or not at all, so no event is
published for a change that rolled back and no committed change loses its event.

Two ways out of the table:

- `DatabaseOutbox` implements `eventing.outbox.Outbox` (ordered, at least once, dead letters
  kept), for `eventing.relay.Relay` with a `eventing.publisher.Publisher` to ``K_SINK`` in
  production. A sent row is deleted; a refused one stays with state ``dead`` and the answer.
- `drain_to_queue` moves pending rows into the embedded broker's queue in one transaction
  (enqueue and delete together: nothing lost, nothing doubled), for `vwm up`; the broker service
  runs it whenever it is notified and on every poll.

Order is the order of `seq`, assigned at insert. On SQLite transactions run one at a time, so
that is commit order; on PostgreSQL two transactions that commit close together may become
visible out of `seq` order (consumers reorder by their own keys, as with any broker).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from eventing.events import EventError, VwmEvent
from eventing.outbox import MAX_ANSWER_CHARS, DeadLetter, OutboxEntry, OutboxError
from functions.broker.queue import Route, Run, decode, encode, enqueue
from functions.db.columns import utcnow
from functions.db.models import OutboxEvent, OutboxState


def add(session: Session, event: VwmEvent, now: datetime | None = None) -> None:
    """Write `event` to the outbox in the caller's transaction (it leaves once that commits)."""
    session.add(
        OutboxEvent(
            source=event.source,
            id=event.id,
            type=event.type,
            body=encode(event),
            state=OutboxState.PENDING,
            created_at=now or utcnow(),
        )
    )
    session.flush()


class DatabaseOutbox:
    """An `eventing.outbox.Outbox` over `vwm.outbox`. `run` runs a unit of work in a thread
    (`functions.context.db`, or `functions.broker.queue.run_in`). Appends made through this
    object keep the order of the calls; one relay drains a database at a time (a second one
    would send the same head, and then be told it is no longer the oldest)."""

    def __init__(self, run: Run) -> None:
        self._run = run
        self._lock = asyncio.Lock()  # FIFO: appends keep the order of the calls

    async def append(self, event: VwmEvent) -> None:
        async with self._lock:
            await self._run(add, event)

    async def peek(self, limit: int) -> list[OutboxEntry]:
        rows = await self._run(_pending_rows, limit)
        return [OutboxEntry(_decode(seq, body), seq) for seq, body in rows]

    async def mark_sent(self, entry: OutboxEntry) -> None:
        await self._run(_mark_sent, entry.position)

    async def dead_letter(self, entry: OutboxEntry, *, status: int | None, answer: str) -> None:
        await self._run(_dead_letter, entry.position, status, answer)

    async def pending(self) -> int:
        return await self._run(_count_pending)

    async def dead_letters(self) -> list[DeadLetter]:
        """Every dead letter kept, oldest first (for operators and tests)."""
        rows = await self._run(_dead_rows)
        return [
            DeadLetter(_decode(seq, body), status, answer or "", at)
            for seq, body, status, answer, at in rows
        ]


def drain_to_queue(session: Session, routes: Sequence[Route], limit: int = 100) -> int:
    """Move up to `limit` pending outbox rows, oldest first, into the broker's queue, in this
    transaction; a row that is not a VWM event becomes a dead letter. Returns how many rows
    moved (a duplicate of a queued event counts: it is acknowledged by the queue)."""
    query = (
        select(OutboxEvent)
        .where(OutboxEvent.state == OutboxState.PENDING)
        .order_by(OutboxEvent.seq)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    moved = 0
    for row in session.scalars(query):
        try:
            event = decode(row.body)
        except EventError as exc:
            row.state, row.status, row.dead_at = OutboxState.DEAD, None, utcnow()
            row.answer = f"not a VWM event: {exc.message}"[:MAX_ANSWER_CHARS]
            continue
        enqueue(session, event, routes)
        session.delete(row)
        moved += 1
    session.flush()
    return moved


def _pending_rows(session: Session, limit: int) -> list[tuple[int, str]]:
    rows = session.execute(
        select(OutboxEvent.seq, OutboxEvent.body)
        .where(OutboxEvent.state == OutboxState.PENDING)
        .order_by(OutboxEvent.seq)
        .limit(limit)
    )
    return [(seq, body) for seq, body in rows]


def _check_head(session: Session, seq: int) -> None:
    head = session.scalar(
        select(func.min(OutboxEvent.seq)).where(OutboxEvent.state == OutboxState.PENDING)
    )
    if head != seq:
        raise ValueError("that entry is not the oldest pending one: peek again")


def _mark_sent(session: Session, seq: int) -> None:
    _check_head(session, seq)
    session.execute(delete(OutboxEvent).where(OutboxEvent.seq == seq))


def _dead_letter(session: Session, seq: int, status: int | None, answer: str) -> None:
    _check_head(session, seq)
    session.execute(
        update(OutboxEvent)
        .where(OutboxEvent.seq == seq)
        .values(
            state=OutboxState.DEAD,
            status=status,
            answer=answer[:MAX_ANSWER_CHARS],
            dead_at=utcnow(),
        )
    )


def _count_pending(session: Session) -> int:
    count = session.scalar(
        select(func.count())
        .select_from(OutboxEvent)
        .where(OutboxEvent.state == OutboxState.PENDING)
    )
    return int(count or 0)


def _dead_rows(
    session: Session,
) -> list[tuple[int, str, int | None, str | None, datetime]]:
    rows = session.execute(
        select(
            OutboxEvent.seq,
            OutboxEvent.body,
            OutboxEvent.status,
            OutboxEvent.answer,
            OutboxEvent.dead_at,
        )
        .where(OutboxEvent.state == OutboxState.DEAD)
        .order_by(OutboxEvent.seq)
    )
    return [(seq, body, status, answer, at or utcnow()) for seq, body, status, answer, at in rows]


def _decode(seq: int, body: str) -> VwmEvent:
    try:
        return decode(body)
    except EventError as exc:
        raise OutboxError(
            "outbox_corrupt",
            f"vwm.outbox row {seq} is not a VWM event ({exc.message}): it was written by "
            "something else; delete the row or set its state to 'dead'",
            seq=seq,
        ) from None
