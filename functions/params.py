"""Typed readers for the control plane's query parameters and headers, used by the function
modules (`telemetry` for time windows, `prompts` for the event stream's resume point).

The rules themselves live in `eventing.inputs`, shared with the harness; a refusal is an
`InputError` (400 `invalid_parameter`) or, inside a pydantic model, a field error (422).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BeforeValidator, Field
from starlette.requests import Request

from eventing.inputs import ascii_uint, timestamp
from eventing.lazy_models import LazyModel

MAX_SEQUENCE = 10**18 - 1  # 18 ASCII digits, what `ascii_uint` reads


def _timestamp(value: object) -> datetime:
    # Only strings: pydantic alone would also read a bare number as seconds since 1970.
    if not isinstance(value, str):
        raise ValueError("use an ISO 8601 date or date-time, e.g. 2026-11-25T10:00:00Z")
    return timestamp(value)


Timestamp = Annotated[datetime, BeforeValidator(_timestamp)]
"""An ISO 8601 date or date-time, aware and in UTC; one without a zone is read as UTC."""


def resume_point(request: Request) -> int:
    """The sequence number after which an event stream resumes: `Last-Event-ID`, else `?after=`,
    else 0."""
    if raw := request.headers.get("last-event-id"):
        return ascii_uint(raw, "Last-Event-ID")
    if raw := request.query_params.get("after"):
        return ascii_uint(raw, "after")
    return 0


class ResumeQuery(LazyModel):
    """`?after=` as the OpenAPI document describes it (read by `resume_point`)."""

    after: int = Field(default=0, ge=0, le=MAX_SEQUENCE)


RESUME_HEADERS = (("Last-Event-ID", {"type": "integer", "minimum": 0, "maximum": MAX_SEQUENCE}),)
"""Headers of the resumable event streams, for the OpenAPI document."""
