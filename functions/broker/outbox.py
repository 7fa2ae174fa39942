"""The control plane's outbox in the database (`vwm.outbox`): the transactional-outbox pattern.

Code that changes state and has an event to tell about it calls `add(session, event)` inside
the same transaction: the change and its event commit together or not at all, so no event is
published for a change that rolled back and no committed change loses its event.

Two ways out of the table:

- in production, `functions.outbox_relay` relays it to ``K_SINK`` (its `TableOutbox` is the one
  `eventing.outbox.Outbox` over this table; the row insert, `add_event`, lives there too, since
  that module sits below this one);
- `drain_to_queue` moves pending rows into the embedded broker's queue in one transaction
  (enqueue and delete together: nothing lost, nothing doubled), for `vwm up`; the broker service
  runs it whenever it is notified and on every poll.

Order is the order of `seq`, assigned at insert. On SQLite transactions run one at a time, so
that is commit order; on PostgreSQL two transactions that commit close together may become
visible out of `seq` order (consumers reorder by their own keys, as with any broker).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from eventing.events import EventError, VwmEvent
from eventing.outbox import MAX_ANSWER_CHARS
from eventing.tracing import with_trace
from functions.broker.queue import Route, decode, enqueue
from functions.db.columns import utcnow
from functions.db.models import OutboxEvent, OutboxState
from functions.outbox_relay import add_event


def add(session: Session, event: VwmEvent) -> None:
    """Write `event` to the outbox in the caller's transaction (it leaves once that commits),
    carrying the trace context it is published in unless it carries one already."""
    add_event(session, with_trace(event))


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
