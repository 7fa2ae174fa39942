"""Events for the broker's tests: real catalogue events, built as their publishers build them."""

from __future__ import annotations

from datetime import UTC, datetime

from eventing.events import (
    CONTROL_PLANE_SOURCE,
    JobStarted,
    SessionEndRequested,
    Tick,
    VwmEvent,
    harness_source,
    job_event_id,
    new_event,
)

SESSION = "a1b2c3d4e5f60718293a4b5c6d7e8f90"
OTHER_SESSION = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
JOB = "f0e1d2c3b4a5968778695a4b3c2d1e0f"
# Fixed, so that the same job event built twice is the same event (as a harness re-sends it).
STARTED = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def job_started(seq: int = 1, *, session: str = SESSION, job: str = JOB) -> VwmEvent:
    return new_event(
        JobStarted(prompt=f"prompt {seq}", cli="claude", started_at=STARTED),
        source=harness_source(session),
        session_id=session,
        job_id=job,
        seq=seq,
        event_id=job_event_id(job, seq),
        time=STARTED,
    )


def tick() -> VwmEvent:
    return new_event(Tick(), source=CONTROL_PLANE_SOURCE)


def end_requested(session: str = SESSION) -> VwmEvent:
    return new_event(
        SessionEndRequested(requested_at=datetime.now(UTC)),
        source=CONTROL_PLANE_SOURCE,
        session_id=session,
    )
