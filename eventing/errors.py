"""The one shape of every error VWM reports, and the JSON body both HTTP edges answer with.

Each package has one base built on `VwmError` (`functions.errors.FunctionsError`,
`harness.errors.HarnessError`, and the input and event errors here in `eventing`). An error
carries everything an edge needs, so no edge keeps a table of kinds:

- `code`: stable, documented, what callers branch on (never the message);
- `message`: for people, says what to do next;
- `status`: the HTTP status an edge answers with;
- `retryable`: whether the same call may succeed later;
- `details`: data for machines, JSON-able.

A subclass states `code`, `status` and `retryable` once, as class attributes; an instance may
narrow them (a refusal that carries the other side's code, a backend error that is retryable this
time). The body, `{"error": {"code", "message", "details"}}`, is `ErrorBody`: the control plane and
the harness build it with it, and clients parse answers with it. `details` is left out when empty.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Any

from pydantic import ConfigDict, Field

from eventing.lazy_models import LazyModel

# Codes one side sends and the other branches on. Named here, in the shared contract, so the
# control plane compares against the same constant the harness raises with, not a retyped string.
NOT_FOUND = "not_found"
CONFLICT = "conflict"
JOB_RUNNING = "job_running"
JOB_EXPIRED = "job_expired"
UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
INTERNAL = "internal"


class VwmError(Exception):
    """Base of every error VWM reports. Subclasses set `code`, `status` and `retryable` as class
    attributes; `details` are keyword arguments (so a detail may be named ``status`` or ``code``
    without clashing: the constructor takes nothing else by keyword)."""

    code: str = INTERNAL
    status: int = 500
    retryable: bool = False

    def __init__(self, message: str, /, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details

    @property
    def status_code(self) -> int:
        """`status` under the name Starlette and httpx use; older callers read this one."""
        return self.status

    def to_body(self) -> dict[str, Any]:
        """The JSON error body for this error: ``{"error": {"code", "message", "details"}}``."""
        return ErrorBody.of(self.code, self.message, self.details).to_json()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, status={self.status}, {self.message!r})"


def jsonable(value: Any) -> Any:
    """`value` with anything JSON cannot hold as text: enum members as their value, datetimes,
    paths and other objects as `str`. Mappings and sequences are walked, so a list of problems
    stays a list."""
    if isinstance(value, Enum):
        return jsonable(value.value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, Mapping):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    return str(value)


class ErrorObject(LazyModel):
    """The inside of an error body. (`eventing.events.ErrorInfo` is its twin inside events, with
    the bounds an event's payload has.)"""

    model_config = ConfigDict(extra="ignore")

    code: str = Field(min_length=1, description="stable; what callers branch on")
    message: str = Field(description="for people: what went wrong and what to do next")
    details: dict[str, Any] = Field(default_factory=dict, description="data for machines")


class ErrorBody(LazyModel):
    """``{"error": {"code", "message", "details"}}``: every error answer of both HTTP edges."""

    model_config = ConfigDict(extra="ignore")

    error: ErrorObject

    @classmethod
    def of(cls, code: str, message: str, details: Mapping[str, Any] | None = None) -> ErrorBody:
        return cls(error=ErrorObject(code=code, message=message, details=jsonable(details or {})))

    def to_json(self) -> dict[str, Any]:
        """The body as sent: `details` only when there are some (the documented shape)."""
        inner: dict[str, Any] = {"code": self.error.code, "message": self.error.message}
        if self.error.details:
            inner["details"] = self.error.details
        return {"error": inner}
