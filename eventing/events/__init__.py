"""The VWM CloudEvents contract: the catalogue of event types, their payload models, the typed
envelope, and how to build and decode events. Imported by the publishers and the `events` function
on both sides (`harness/`, `functions/`); the wire format itself is `eventing.codec`'s job.

- `payloads`: one strict pydantic model per type (the event's `data`).
- `envelope`: `VwmEvent`, the `CATALOGUE` (type → payload model and extensions), `new_event`,
  `decode_event`, `EventError`, source and id conventions.

The catalogue for people, with examples, is `docs/events.md`.
"""

from eventing.events.envelope import (
    CATALOGUE,
    CONTROL_PLANE_SOURCE,
    EXTENSIONS,
    SPEC_VERSION,
    EventError,
    EventSpec,
    VwmEvent,
    decode_event,
    harness_source,
    job_event_id,
    new_event,
    new_event_id,
)
from eventing.events.payloads import (
    EndReason,
    ErrorInfo,
    JobCompleted,
    JobFailed,
    JobOutput,
    JobStarted,
    JobSummary,
    JobTimings,
    LearningCompleted,
    OutputEvent,
    Payload,
    PromptMode,
    PromptRequested,
    SessionCreated,
    SessionEnded,
    SessionEndRequested,
    SessionReady,
    Tick,
    TokenUsage,
)

PROMPT_REQUESTED = "dev.vwm.prompt.requested"
JOB_STARTED = "dev.vwm.job.started"
JOB_OUTPUT = "dev.vwm.job.output"
JOB_COMPLETED = "dev.vwm.job.completed"
JOB_FAILED = "dev.vwm.job.failed"
SESSION_CREATED = "dev.vwm.session.created"
SESSION_READY = "dev.vwm.session.ready"
SESSION_END_REQUESTED = "dev.vwm.session.end.requested"
SESSION_ENDED = "dev.vwm.session.ended"
LEARNING_COMPLETED = "dev.vwm.learning.completed"
TICK = "dev.vwm.tick"

__all__ = [
    "CATALOGUE",
    "CONTROL_PLANE_SOURCE",
    "EXTENSIONS",
    "JOB_COMPLETED",
    "JOB_FAILED",
    "JOB_OUTPUT",
    "JOB_STARTED",
    "LEARNING_COMPLETED",
    "PROMPT_REQUESTED",
    "SESSION_CREATED",
    "SESSION_ENDED",
    "SESSION_END_REQUESTED",
    "SESSION_READY",
    "SPEC_VERSION",
    "TICK",
    "EndReason",
    "ErrorInfo",
    "EventError",
    "EventSpec",
    "JobCompleted",
    "JobFailed",
    "JobOutput",
    "JobStarted",
    "JobSummary",
    "JobTimings",
    "LearningCompleted",
    "OutputEvent",
    "Payload",
    "PromptMode",
    "PromptRequested",
    "SessionCreated",
    "SessionEndRequested",
    "SessionEnded",
    "SessionReady",
    "Tick",
    "TokenUsage",
    "VwmEvent",
    "decode_event",
    "harness_source",
    "job_event_id",
    "new_event",
    "new_event_id",
]
