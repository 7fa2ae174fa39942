"""Status changes: the allowed ones happen and stamp their times, the others are refused with
from/to in the error, and when writers race for the same change exactly one wins. `start_job`
queues one job per session, replays idempotency keys, and refuses busy or ended sessions."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy.orm import Session, sessionmaker

from functions.db.engine import transaction
from functions.db.errors import (
    IdempotencyKeyReused,
    InvalidTransition,
    NotFoundError,
    SessionBusy,
    SessionEnded,
)
from functions.db.models import JobStatus, SessionStatus, WorkerSession
from functions.db.repositories import Jobs, Sessions
from functions.db.transitions import (
    JOB_TRANSITIONS,
    SESSION_TRANSITIONS,
    PromptRequest,
    start_job,
    transition_job,
    transition_session,
)
from tests.db import factories

Factory = sessionmaker[Session]

# Paths from `provisioning` that reach each session status, so any status can be set up.
SESSION_PATHS = {
    SessionStatus.PROVISIONING: [],
    SessionStatus.READY: ["ready"],
    SessionStatus.ENDING: ["ending"],
    SessionStatus.ENDED: ["ending", "ended"],
    SessionStatus.FAILED: ["failed"],
}
JOB_PATHS = {
    JobStatus.QUEUED: [],
    JobStatus.RUNNING: ["running"],
    **{status: ["running", status] for status in JobStatus if status not in ("queued", "running")},
}


def _session_in(factory: Factory, status: SessionStatus) -> str:
    with transaction(factory) as db:
        session = factories.session(db, ready=False)
        for step in SESSION_PATHS[status]:
            session = transition_session(db, session, step)
        return session.id


def _job_in(factory: Factory, status: JobStatus) -> str:
    with transaction(factory) as db:
        job = factories.job(db, factories.session(db))
        for step in JOB_PATHS[status]:
            job = transition_job(db, job, step)
        return job.id


def test_the_session_machine_is_the_documented_one() -> None:
    assert SESSION_TRANSITIONS[SessionStatus.ENDED] == frozenset()
    assert SESSION_TRANSITIONS[SessionStatus.FAILED] == {SessionStatus.ENDING}
    for status in ("succeeded", "failed", "cancelled", "timeout"):
        assert JOB_TRANSITIONS[JobStatus(status)] == frozenset()


@pytest.mark.parametrize("source", list(SessionStatus))
@pytest.mark.parametrize("target", list(SessionStatus))
def test_session_transitions(
    factory: Factory, source: SessionStatus, target: SessionStatus
) -> None:
    session_id = _session_in(factory, source)
    with transaction(factory) as db:
        session = Sessions(db).get(session_id)
        if target not in SESSION_TRANSITIONS[source]:
            with pytest.raises(InvalidTransition) as refused:
                transition_session(db, session, target)
            assert f"from {source.value!r} to {target.value!r}" in str(refused.value)
            assert Sessions(db).get(session_id).status == source
            return
        moved = transition_session(db, session, target, endpoint="http://127.0.0.1:9")
    assert moved.status == target and moved.endpoint == "http://127.0.0.1:9"
    if target is SessionStatus.READY:
        assert moved.ready_at is not None and moved.last_activity_at == moved.ready_at
    assert (moved.ended_at is not None) == (target is SessionStatus.ENDED)


@pytest.mark.parametrize("source", list(JobStatus))
@pytest.mark.parametrize("target", list(JobStatus))
def test_job_transitions(factory: Factory, source: JobStatus, target: JobStatus) -> None:
    job_id = _job_in(factory, source)
    with transaction(factory) as db:
        job = Jobs(db).get(job_id)
        if target not in JOB_TRANSITIONS[source]:
            with pytest.raises(InvalidTransition, match=f"from '{source}' to '{target}'"):
                transition_job(db, job, target)
            return
        moved = transition_job(db, job, target, result={"text": "done"})
    assert moved.status == target and moved.result == {"text": "done"}
    assert (moved.started_at is not None) == (JobStatus.RUNNING in (source, target))
    assert (moved.finished_at is not None) == (target not in ("queued", "running"))


def test_a_stale_row_cannot_undo_a_change(factory: Factory) -> None:
    """A row loaded as `ready` that another transaction has since ended cannot be made ready
    again or ended twice: the guard reads the stored status, not the loaded one."""
    session_id = _session_in(factory, SessionStatus.READY)
    with transaction(factory) as db:
        stale = Sessions(db).get(session_id)
    with transaction(factory) as db:
        transition_session(db, Sessions(db).get(session_id), "ending")
        transition_session(db, Sessions(db).get(session_id), "ended")
    with transaction(factory) as db, pytest.raises(InvalidTransition, match="from 'ended'"):
        transition_session(db, stale, "ending")


def test_unknown_rows_and_statuses(factory: Factory) -> None:
    with transaction(factory) as db:
        ghost = WorkerSession(id="0" * 32, worker_id="w", workspace="/w", status="ready")
        with pytest.raises(NotFoundError):
            transition_session(db, ghost, "ending")
        with pytest.raises(ValueError, match="paused"):
            transition_session(db, ghost, "paused")


def test_the_first_of_two_concurrent_writers_wins(factory: Factory) -> None:
    """A holds its change uncommitted; B, starting from the same `ready`, must wait for A and
    then find the session no longer `ready`."""
    session_id = _session_in(factory, SessionStatus.READY)
    outcome: list[BaseException | str] = []

    def writer_b() -> None:
        try:
            with transaction(factory) as db:
                transition_session(db, Sessions(db).get(session_id), "ending")
            outcome.append("won")
        except InvalidTransition as error:
            outcome.append(error)

    with transaction(factory) as db:
        transition_session(db, Sessions(db).get(session_id), "ending")
        b = threading.Thread(target=writer_b)
        b.start()
        time.sleep(0.3)  # B is now blocked behind A's lock
        assert outcome == []
    b.join(timeout=30)
    assert len(outcome) == 1 and isinstance(outcome[0], InvalidTransition)
    assert outcome[0].from_status == "ending"


def _race(count: int, attempt: Callable[[], object]) -> list[object]:
    barrier = threading.Barrier(count)

    def run() -> object:
        barrier.wait(timeout=30)
        try:
            return attempt()
        except Exception as error:
            return error

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(lambda _: run(), range(count)))


def test_many_writers_racing_from_ready_only_one_wins(factory: Factory) -> None:
    session_id = _session_in(factory, SessionStatus.READY)

    def end() -> str:
        with transaction(factory) as db:
            return transition_session(db, Sessions(db).get(session_id), "ending").status

    results = _race(6, end)
    assert results.count("ending") == 1
    assert all(isinstance(r, InvalidTransition) for r in results if r != "ending")


def test_start_job_queues_one_job_at_a_time(factory: Factory) -> None:
    session_id = _session_in(factory, SessionStatus.READY)
    with transaction(factory) as db:
        first = start_job(db, session_id, prompt="one", mode="sync")
    assert first.created and first.job.status == "queued"
    with transaction(factory) as db, pytest.raises(SessionBusy) as busy:
        start_job(db, session_id, prompt="two", mode="sync")
    assert busy.value.code == "session_busy" and busy.value.retryable
    assert busy.value.details["active_job_id"] == first.job.id
    with transaction(factory) as db:
        transition_job(db, Jobs(db).get(first.job.id), "running")
        transition_job(db, Jobs(db).get(first.job.id), "succeeded")
        second = start_job(db, session_id, prompt="two", mode="async")
    assert second.created and second.job.id != first.job.id


def test_concurrent_start_job_queues_exactly_one(factory: Factory) -> None:
    session_id = _session_in(factory, SessionStatus.READY)

    def start() -> object:
        with transaction(factory) as db:
            return start_job(db, session_id, prompt="p", mode="sync").job.id

    results = _race(5, start)
    assert sum(isinstance(r, str) for r in results) == 1
    assert sum(isinstance(r, SessionBusy) for r in results) == 4


def test_prompt_requests_queue_beside_a_busy_sessions_job_once_each(factory: Factory) -> None:
    session_id = _session_in(factory, SessionStatus.READY)
    with transaction(factory) as db:
        running = start_job(db, session_id, prompt="one", mode="sync").job.id
    requests = [PromptRequest(f"p{n:031d}", f"event-{n}", None) for n in range(2)]
    for request in (*requests, requests[0]):
        with transaction(factory) as db:
            start_job(db, session_id, prompt="later", mode="async", request=request)
    with transaction(factory) as db:
        active = {job.id for job in Jobs(db).page(session_id, limit=10).items}
        row = Jobs(db).get(requests[0].job_id)
        assert (row.causation_id, row.status) == ("event-0", "queued")
    assert active == {running, *(request.job_id for request in requests)}
    # A sync prompt still finds the session busy.
    with transaction(factory) as db, pytest.raises(SessionBusy):
        start_job(db, session_id, prompt="two", mode="sync")


def test_an_idempotency_key_returns_the_first_job(factory: Factory) -> None:
    session_id = _session_in(factory, SessionStatus.READY)
    with transaction(factory) as db:
        first = start_job(db, session_id, prompt="p", mode="sync", idempotency_key="k1")
    with transaction(factory) as db:
        again = start_job(db, session_id, prompt="p", mode="sync", idempotency_key="k1")
    assert not again.created and again.job.id == first.job.id
    with transaction(factory) as db, pytest.raises(IdempotencyKeyReused):
        start_job(db, session_id, prompt="something else", mode="sync", idempotency_key="k1")


def test_concurrent_retries_with_one_key_make_one_job(factory: Factory) -> None:
    session_id = _session_in(factory, SessionStatus.READY)

    def start() -> object:
        with transaction(factory) as db:
            started = start_job(db, session_id, prompt="p", mode="sync", idempotency_key="k")
            return started.job.id, started.created

    results = [result for result in _race(5, start) if isinstance(result, tuple)]
    assert len(results) == 5
    assert len({job_id for job_id, _ in results}) == 1
    assert [created for _, created in results].count(True) == 1


@pytest.mark.parametrize("status", ["ending", "ended", "failed"])
def test_a_session_past_ready_takes_no_prompts(factory: Factory, status: str) -> None:
    session_id = _session_in(factory, SessionStatus(status))
    with transaction(factory) as db, pytest.raises(SessionEnded, match=status):
        start_job(db, session_id, prompt="p", mode="sync")


def test_prompts_may_queue_while_provisioning_and_learning_runs_while_ending(
    factory: Factory,
) -> None:
    provisioning = _session_in(factory, SessionStatus.PROVISIONING)
    ending = _session_in(factory, SessionStatus.ENDING)
    with transaction(factory) as db:
        assert start_job(db, provisioning, prompt="p", mode="async").created
        learning = start_job(db, ending, prompt="learn", mode="async", kind="learning")
    assert learning.job.kind == "learning"
    with transaction(factory) as db, pytest.raises(SessionEnded):
        start_job(db, provisioning, prompt="learn", mode="async", kind="learning")


def test_start_job_on_an_unknown_session(factory: Factory) -> None:
    with transaction(factory) as db, pytest.raises(NotFoundError, match="session"):
        start_job(db, "missing", prompt="p", mode="sync")
