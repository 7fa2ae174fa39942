"""VWM, the Virtual Worker Manager: the Python SDK (`vwm.sdk`, re-exported here) and the `vwm`
command line (`vwm.cli`). Both are clients of the control plane's REST API
(docs/control-plane.md)."""

from vwm.errors import (
    AuthError,
    ConflictError,
    NotFoundError,
    ServerError,
    SessionBusyError,
    UnreachableError,
    ValidationError,
    VWMError,
)
from vwm.sdk import Client, Event, Job, JobResult, StreamSettings, VirtualWorker, VWSession

__all__ = [
    "AuthError",
    "Client",
    "ConflictError",
    "Event",
    "Job",
    "JobResult",
    "NotFoundError",
    "ServerError",
    "SessionBusyError",
    "StreamSettings",
    "UnreachableError",
    "VWMError",
    "VWSession",
    "ValidationError",
    "VirtualWorker",
]
