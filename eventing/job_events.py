"""Lifecycle event kinds the harness adds around a CLI run, and the shape of every stored event.

A job's event log is a sequence of `JobEvent`s: ``job_started``, then the normalized agent events
(`eventing.agent_events.EventKind`), then ``job_finished``. ``seq`` starts at 1 and has no gaps; it
is also the SSE event id, so a client resumes with ``Last-Event-ID``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import ConfigDict

from eventing.lazy_models import LazyModel


class JobEventKind(StrEnum):
    JOB_STARTED = "job_started"  # {prompt, cli, resume_id}
    JOB_FINISHED = "job_finished"  # {status, summary, error, exit_code, duration_ms, calls}


class JobStatus(StrEnum):
    """A job's status, the one definition for both sides. ``queued`` is the control plane's
    alone: its job row exists before the harness has the job. The harness never reports it (its
    jobs start ``running``), so its status set is every member but ``queued``."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"

    @property
    def active(self) -> bool:
        """Not finished yet: it may still run, or be waiting to."""
        return self in ACTIVE

    @property
    def finished(self) -> bool:
        """Final: the job ran (or was given up on) and its status changes no more."""
        return self in FINISHED


ACTIVE = frozenset({JobStatus.QUEUED, JobStatus.RUNNING})
FINISHED = frozenset(JobStatus) - ACTIVE


class JobEvent(LazyModel):
    """One entry of a job's log: a line of the harness's log file, a frame of its event stream
    (parsed by the control plane with `functions.harness_client.decode`), a row of the control
    plane's stored log. Strict on types (a seq sent as a string is refused, not coerced); fields
    a newer harness may add are ignored."""

    model_config = ConfigDict(extra="ignore", strict=True)

    job_id: str
    seq: int
    kind: str
    data: dict[str, Any]
    ts: float
