"""The broker's queue (`functions.broker.queue`) on PostgreSQL and SQLite: an event is stored
once per source + id with a delivery per matching subscription, claims are leases that two
loops never share, retries wait their turn, dead letters keep the last answer, and settled rows
are pruned after the retention."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from functions.broker import queue
from functions.broker.filters import TriggerFilter, parse_trigger_filter
from functions.db.engine import transaction
from functions.db.models import BrokerDelivery, BrokerEvent
from tests.broker.events import OTHER_SESSION, SESSION, end_requested, job_started, tick

T0 = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Route:
    name: str
    filter: TriggerFilter


def route(name: str, spec: dict) -> Route:
    return Route(name, parse_trigger_filter(spec))


EVERYTHING = route("everything", {})
JOBS = route("jobs", {"filters": [{"prefix": {"type": "dev.vwm.job."}}]})


def deliveries(session: Session) -> list[tuple[str, str, str, int]]:
    """(event id, subscription, state, attempts), in event order."""
    rows = session.execute(
        select(
            BrokerEvent.id,
            BrokerDelivery.subscription,
            BrokerDelivery.state,
            BrokerDelivery.attempts,
        )
        .join(BrokerEvent, BrokerEvent.seq == BrokerDelivery.event_seq)
        .order_by(BrokerDelivery.event_seq, BrokerDelivery.subscription)
    )
    return [tuple(row) for row in rows]  # type: ignore[misc]


def test_an_event_is_queued_once_per_source_and_id(factory: sessionmaker[Session]) -> None:
    event = job_started(1)
    with transaction(factory) as session:
        assert queue.enqueue(session, event, [EVERYTHING, JOBS], T0) is True
    with transaction(factory) as session:
        assert queue.enqueue(session, event, [EVERYTHING, JOBS], T0) is False  # re-posted
        assert queue.counts(session) == {"pending": 2, "delivered": 0, "dead": 0, "events": 1}
        [stored] = session.scalars(select(BrokerEvent))
        assert queue.decode(stored.body) == event  # the whole event round-trips


@pytest.mark.parametrize(
    ("spec", "matching"),
    [
        ({}, {"job1", "job2", "tick", "end"}),
        ({"filters": [{"exact": {"type": "dev.vwm.tick"}}]}, {"tick"}),
        ({"filters": [{"prefix": {"type": "dev.vwm.job."}}]}, {"job1", "job2"}),
        ({"filter": {"attributes": {"sessionid": SESSION}}}, {"job1", "end"}),
        ({"filter": {"attributes": {"sessionid": ""}}}, {"job1", "job2", "end"}),
        ({"filters": [{"exact": {"seq": "1"}}]}, {"job1"}),
        ({"filters": [{"not": {"prefix": {"type": "dev.vwm.job."}}}]}, {"tick", "end"}),
        (
            {
                "filters": [
                    {
                        "any": [
                            {"exact": {"type": "dev.vwm.tick"}},
                            {"suffix": {"source": OTHER_SESSION}},
                        ]
                    }
                ]
            },
            {"tick", "job2"},
        ),
    ],
)
def test_only_events_a_filter_matches_get_a_delivery(
    factory: sessionmaker[Session], spec: dict, matching: set[str]
) -> None:
    events = {
        "job1": job_started(1),
        "job2": job_started(2, session=OTHER_SESSION, job="b" * 32),
        "tick": tick(),
        "end": end_requested(),
    }
    name_of = {event.id: name for name, event in events.items()}
    with transaction(factory) as session:
        for event in events.values():
            assert queue.enqueue(session, event, [route("s", spec)], T0)
        assert {name_of[event_id] for event_id, *_ in deliveries(session)} == matching
        assert queue.counts(session)["events"] == 4  # stored even when nobody wants it


def test_claims_are_leases_oldest_first_and_never_shared(factory: sessionmaker[Session]) -> None:
    events = [job_started(seq) for seq in range(1, 6)]
    with transaction(factory) as session:
        for event in events:
            queue.enqueue(session, event, [JOBS], T0)
    with transaction(factory) as session:
        first = queue.claim_due(session, 3, 30, T0)
    assert [item.event.id for item in first] == [event.id for event in events[:3]]
    assert all(
        item.attempts == 1 and item.leased_until == T0 + timedelta(seconds=30) for item in first
    )
    assert first[0].event == events[0]
    with transaction(factory) as session:
        second = queue.claim_due(session, 10, 30, T0 + timedelta(seconds=1))
    assert [item.event.id for item in second] == [event.id for event in events[3:]]
    with transaction(factory) as session:  # everything is leased
        assert queue.claim_due(session, 10, 30, T0 + timedelta(seconds=29)) == []
    with transaction(factory) as session:  # a lease that is renewed holds
        queue.renew_leases(session, [first[0].delivery_id], T0 + timedelta(seconds=90))
    with transaction(factory) as session:  # the leases expired: the loop that had them is gone
        again = queue.claim_due(session, 10, 30, T0 + timedelta(seconds=31))
    assert sorted(item.delivery_id for item in again) == sorted(
        item.delivery_id for item in first[1:] + second
    )
    assert {item.attempts for item in again} == {2}


def test_a_retry_waits_until_due_and_a_release_gives_the_row_back(
    factory: sessionmaker[Session],
) -> None:
    with transaction(factory) as session:
        queue.enqueue(session, job_started(1), [JOBS], T0)
        queue.enqueue(session, job_started(2), [JOBS], T0)
    with transaction(factory) as session:
        first, second = queue.claim_due(session, 2, 30, T0)
        queue.schedule_retry(session, first.delivery_id, T0 + timedelta(seconds=5), 503, "down")
        queue.release(session, [second.delivery_id])
    with transaction(factory) as session:
        [due] = queue.claim_due(session, 5, 30, T0 + timedelta(seconds=1))
        assert (due.delivery_id, due.attempts) == (second.delivery_id, 1)  # not counted twice
        row = session.get(BrokerDelivery, first.delivery_id)
        assert row is not None
        assert (row.last_status, row.last_answer, row.leased_until) == (503, "down", None)
    with transaction(factory) as session:
        [retried] = queue.claim_due(session, 5, 30, T0 + timedelta(seconds=5))
        assert (retried.delivery_id, retried.attempts) == (first.delivery_id, 2)


def test_settled_rows_keep_the_answer_and_settle_once(factory: sessionmaker[Session]) -> None:
    with transaction(factory) as session:
        queue.enqueue(session, job_started(1), [JOBS], T0)
        queue.enqueue(session, job_started(2), [JOBS], T0)
    with transaction(factory) as session:
        delivered, dead = queue.claim_due(session, 2, 30, T0)
        queue.mark_delivered(session, delivered.delivery_id, 202, T0)
        queue.mark_dead(session, dead.delivery_id, 400, "x" * 10_000, T0)
        queue.mark_delivered(session, dead.delivery_id, 202, T0)  # a late duplicate: no effect
    with transaction(factory) as session:
        assert queue.counts(session) == {"pending": 0, "delivered": 1, "dead": 1, "events": 2}
        [letter] = queue.dead_letters(session)
        assert letter.event.id == job_started(2).id
        assert (letter.subscription, letter.attempts, letter.last_status) == ("jobs", 1, 400)
        assert letter.last_answer == "x" * queue.MAX_ANSWER_CHARS  # bounded


def test_prune_deletes_what_is_settled_after_the_retention(factory: sessionmaker[Session]) -> None:
    events = [job_started(seq) for seq in range(1, 5)]
    with transaction(factory) as session:
        for event in events:
            queue.enqueue(session, event, [JOBS], T0)
        queue.enqueue(session, tick(), [JOBS], T0)  # matched nothing: prunable at once
    with transaction(factory) as session:
        delivered, dead, pending, _ = queue.claim_due(session, 4, 30, T0)
        queue.mark_delivered(session, delivered.delivery_id, 202, T0)
        queue.mark_dead(session, dead.delivery_id, 400, "refused", T0)
        queue.schedule_retry(session, pending.delivery_id, T0 + timedelta(days=3), 503, "")
    with transaction(factory) as session:  # nothing older than the retention yet
        assert queue.prune(session, T0 - timedelta(seconds=1)) == 0
    with transaction(factory) as session:
        assert queue.prune(session, T0 + timedelta(days=1)) == 2  # the delivered one, the tick
    with transaction(factory) as session:
        assert queue.counts(session) == {"pending": 2, "delivered": 0, "dead": 1, "events": 3}
        # Pruned, the delivered event's id is free again: posted anew, it is queued anew.
        assert queue.enqueue(session, events[0], [JOBS], T0 + timedelta(days=1)) is True


def test_two_loops_claiming_at_once_never_get_the_same_row(
    factory: sessionmaker[Session], backend: str
) -> None:
    """PostgreSQL: the second claim skips the rows the first holds locked (SKIP LOCKED), before
    the first commits. SQLite: the second waits for the first's write lock, then sees its
    leases."""
    with transaction(factory) as session:
        for seq in range(1, 7):
            queue.enqueue(session, job_started(seq), [JOBS], T0)
    first = factory()
    first.begin()
    try:
        mine = queue.claim_due(first, 3, 30, T0)
        if backend == "postgresql":
            with transaction(factory) as other:
                theirs = queue.claim_due(other, 10, 30, T0)
            assert {item.delivery_id for item in mine}.isdisjoint(
                item.delivery_id for item in theirs
            )
            assert len(mine) + len(theirs) == 6
        first.commit()
    finally:
        first.close()
    if backend == "sqlite":
        with transaction(factory) as other:
            theirs = queue.claim_due(other, 10, 30, T0)
        assert len(theirs) == 3
        assert {item.delivery_id for item in mine}.isdisjoint(item.delivery_id for item in theirs)
