"""One model call an agent CLI made through the session's metering proxy: the wire contract
between the harness, which measures each call, and the control plane, which stores them.

The harness logs each call as it ends and lists the job's calls, in order, under ``calls`` in the
``data`` of its ``job_finished`` entry (and of ``dev.vwm.job.completed``/``.failed``); the
control plane keeps one row per call (`vw_telemetry.model_calls`) and serves them as
``GET /v1/jobs/{id}/calls``. A job's metered usage is the sum over its calls (`metered_total`).

Receivers check each call on its own: one that does not validate is skipped, never the job.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, get_args

from pydantic import ConfigDict, field_validator

from eventing.agent_events import Usage
from eventing.lazy_models import LazyModel

CallOutcome = Literal["ok", "http_error", "incomplete", "unreachable", "refused"]
"""How a call ended: ``ok`` (an answer with its final usage), ``http_error`` (the provider
answered an error status), ``incomplete`` (the answer broke off before its final usage),
``unreachable`` (the provider was never reached), ``refused`` (the proxy did not forward it)."""
CALL_OUTCOMES: tuple[str, ...] = get_args(CallOutcome)


MAX_CALLS_PER_JOB = 10_000
"""At most this many calls travel with a job's end (its event must stay under 1 MiB anyway)."""

MAX_CALL_ERROR_CHARS = 2000
"""A provider's error message is cut to this: an HTML error page must not fill the job's event."""


class ModelCall(LazyModel):
    """One request to the model provider and what it cost, as the meter measured it."""

    model_config = ConfigDict(extra="ignore")

    seq: int  # 1, 2, ... within the job, in the order the calls ended
    api: str  # the meter's WireApi value; open, so a call of an API added later is still stored
    model: str | None  # as the provider answered, else as asked
    streamed: bool
    status: int | None  # the HTTP status the provider answered; None: it was never reached
    outcome: CallOutcome
    usage: Usage
    complete: bool  # the final usage was read (else `usage` is what was seen before the end)
    started_at: float  # epoch seconds
    latency_ms: float  # request start to the answer's last byte
    ttft_ms: float | None  # request start to the first content byte (streamed calls only)
    error: str | None = None  # the provider's message (http_error, unreachable, refused)

    @field_validator("api", "model", "error")
    @classmethod
    def _storable_text(cls, text: str | None) -> str | None:
        # NUL becomes U+FFFD: PostgreSQL (text, JSONB) cannot hold it, and a job's end that
        # carries one could not be stored at all.
        return text.replace("\x00", "\ufffd") if text is not None else None

    @field_validator("error")
    @classmethod
    def _bounded(cls, error: str | None) -> str | None:
        if error is None or len(error) <= MAX_CALL_ERROR_CHARS:
            return error
        return error[: MAX_CALL_ERROR_CHARS - 1] + "…"


def metered_total(calls: Iterable[ModelCall]) -> Usage:
    """The tokens of all `calls` together: what the provider billed for the job."""
    total = Usage()
    for call in calls:
        total = total + call.usage
    return total
