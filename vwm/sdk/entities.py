"""Durable entities for orchestrators: a session and its turns that outlive the process using
them. The second layer of the SDK, on `VirtualWorker` and `VWSession` (docs/sdk.md).

A `VWSessionEntity` is a named, persisted handle to a session: its worker, the session it made,
that session's status. A `VWTurnEntity` is one prompt with a stable turn id: the id is the job's
idempotency key, and the store keeps its job id, the last event its caller has seen and its
outcome. An orchestrator that dies mid-turn and starts again with the same store and names
finds everything where it was:

- a session entity made before answers the same session (its create carries an idempotency
  key derived from the entity's name, so a process killed between the create and its save does
  not make a second one);
- a turn never sent is sent once (sent again after a kill, its idempotency key answers the job
  the first send made);
- a running turn is followed again from the last event its caller saw: no gap, no repeat;
- a finished turn answers its result without running the prompt again.

Events are delivered exactly once while the process lives. Across a kill the caller chooses
(`delivery`):

- ``"at_least_once"`` (the default): an event counts as seen when the caller's loop asks for
  the next one (or `result` returns), so a process killed while handling an event handles it
  again after its restart. A handler that must not repeat an effect records the event's ``seq``
  with it.
- ``"at_most_once"``: an event counts as seen as it is handed over, so none is handed over
  twice; the one being handled when the process died is not handed over again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Literal

from vwm.errors import ConflictError, ProtocolError
from vwm.sdk.entity_store import FINISHED, SENT, EntityStore, SessionRecord, TurnRecord
from vwm.sdk.models import Event, JobResult
from vwm.sdk.sse import follow

if TYPE_CHECKING:
    from vwm.sdk.client import Client
    from vwm.sdk.sessions import VWSession

# The session create's idempotency key: the entity's name, under a prefix of its own so it does
# not meet a key a caller chose for a session of the same worker.
SESSION_KEY_PREFIX = "vwm-entity:"

Delivery = Literal["at_least_once", "at_most_once"]
DELIVERIES: tuple[Delivery, ...] = ("at_least_once", "at_most_once")


class VWSessionEntity:
    """Session entity `name` of `store`, for worker `worker`. Creating it fetches nothing;
    `open` makes or finds its session."""

    def __init__(
        self,
        client: Client,
        store: EntityStore,
        name: str,
        *,
        worker: str,
        session_repo: Mapping[str, str] | None = None,
        budget: Mapping[str, int | float | None] | None = None,
    ) -> None:
        self._client = client
        self.store = store
        self.name = name
        self.worker = worker
        self._session_repo = dict(session_repo) if session_repo is not None else None
        self._budget = dict(budget) if budget is not None else None

    @property
    def record(self) -> SessionRecord | None:
        return self.store.load_session(self.name)

    @property
    def session_id(self) -> str | None:
        record = self.record
        return record.session_id if record else None

    def open(self) -> VWSession:
        """The entity's session, made the first time (and ready), found every time after."""
        record = self.record or SessionRecord(self.name, self.worker)
        if record.worker != self.worker:
            raise ConflictError(
                f"session entity {self.name!r} belongs to worker {record.worker!r}, "
                f"not {self.worker!r}; use another name",
            )
        self.store.save_session(record)  # named before anything is made: a restart finds it
        if record.session_id is not None:
            session = self._client.get_session(record.session_id)
        else:
            session = self._client.worker(self.worker).session(
                self._session_repo,
                budget=self._budget,
                idempotency_key=SESSION_KEY_PREFIX + self.name,
            )
        self.store.save_session(replace(record, session_id=session.id, status=session.status))
        return session

    def turn(self, turn_id: str, prompt: str, *, timeout_s: int | None = None) -> VWTurnEntity:
        """Turn `turn_id` of this session: found if the store has it (its prompt must be the
        same), else recorded as new. Nothing is sent until it is run."""
        record = self.store.load_turn(turn_id)
        if record is None:
            record = TurnRecord(turn_id, self.name, prompt)
            self.store.save_turn(record)
        elif (record.session_name, record.prompt) != (self.name, prompt):
            raise ConflictError(
                f"turn {turn_id!r} was recorded for session entity {record.session_name!r} with "
                "another prompt; a turn id names one prompt of one session",
            )
        return VWTurnEntity(self, turn_id, timeout_s=timeout_s)

    def turns(self) -> list[VWTurnEntity]:
        """Every turn of this entity the store has, oldest first: what a restarted
        orchestrator goes through to finish what it had started."""
        return [VWTurnEntity(self, record.turn_id) for record in self.store.turns(self.name)]

    def end(self, *, learn: bool = True) -> VWSession:
        """End the entity's session (`VWSession.end`) and record its last status."""
        session = self.open().end(learn=learn)
        record = self.record
        if record is not None:
            self.store.save_session(replace(record, status=session.status))
        return session

    def __repr__(self) -> str:
        return f"VWSessionEntity({self.name!r}, worker={self.worker!r})"


class VWTurnEntity:
    """One prompt of a session entity, with a stable id (`VWSessionEntity.turn`)."""

    def __init__(
        self, session: VWSessionEntity, turn_id: str, *, timeout_s: int | None = None
    ) -> None:
        self.session = session
        self.turn_id = turn_id
        self._timeout_s = timeout_s

    @property
    def record(self) -> TurnRecord:
        record = self.session.store.load_turn(self.turn_id)
        if record is None:
            raise ProtocolError(f"turn {self.turn_id!r} is not in the store any more")
        return record

    @property
    def status(self) -> str:
        return self.record.status

    def send(self) -> str:
        """Send the prompt if it was not sent yet; the job's id either way."""
        record = self.record
        if record.job_id is not None:
            return record.job_id
        job = self.session.open().submit(
            record.prompt, timeout_s=self._timeout_s, idempotency_key=self.turn_id
        )
        self.session.store.save_turn(replace(record, job_id=job.id, status=SENT))
        return job.id

    def events(self, *, delivery: Delivery = "at_least_once") -> Iterator[Event]:
        """The turn's events the caller has not seen yet, live until ``job_finished``; sends
        the prompt first if needed. Nothing for a finished turn. `delivery` says when an event
        counts as seen (the module's docstring)."""
        if delivery not in DELIVERIES:
            raise ValueError(f"delivery must be one of {', '.join(DELIVERIES)}, not {delivery!r}")
        if self.record.status == FINISHED:
            return
        job_id = self.send()
        client = self.session._client
        for event in follow(client, job_id=job_id, after=self.record.last_event_id):
            if delivery == "at_most_once":
                self._seen(event, job_id)
            yield event
            if delivery == "at_least_once":
                self._seen(event, job_id)  # back from the caller: it has handled the event

    def _seen(self, event: Event, job_id: str) -> None:
        record = replace(self.record, last_event_id=event.seq)
        if event.is_final:
            # The ending as the event tells it (`JobResult.from_event`): the job's row may be
            # recorded a moment after its stream said how it ended.
            record = replace(record, status=FINISHED, result={"id": job_id, **event.data})
        self.session.store.save_turn(record)

    async def stream(self, *, delivery: Delivery = "at_least_once") -> AsyncIterator[Event]:
        """`events` as an async iterator (each read in a worker thread), for an orchestrator's
        event loop."""
        events = self.events(delivery=delivery)
        done = object()
        while (event := await asyncio.to_thread(next, events, done)) is not done:
            assert isinstance(event, Event)
            yield event

    def result(self) -> JobResult:
        """How the turn ended: at once for a finished turn, else once its events have all
        been read (sending the prompt first if needed)."""
        for _ in self.events():
            pass
        result = self.record.result
        if result is None:
            raise ProtocolError(f"turn {self.turn_id!r} ended without a recorded job")
        return JobResult.from_job(result)

    def __repr__(self) -> str:
        return f"VWTurnEntity({self.turn_id!r}, session={self.session.name!r})"


__all__ = ["DELIVERIES", "SESSION_KEY_PREFIX", "Delivery", "VWSessionEntity", "VWTurnEntity"]
