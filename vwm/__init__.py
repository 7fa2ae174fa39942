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
from vwm.sdk import (
    Client,
    EntityStore,
    Event,
    Job,
    JobResult,
    SqlEntityStore,
    StreamSettings,
    VirtualWorker,
    VWSession,
    VWSessionEntity,
    VWTurnEntity,
)

__all__ = [
    "AuthError",
    "Client",
    "ConflictError",
    "EntityStore",
    "Event",
    "Job",
    "JobResult",
    "NotFoundError",
    "ServerError",
    "SessionBusyError",
    "SqlEntityStore",
    "StreamSettings",
    "UnreachableError",
    "VWMError",
    "VWSession",
    "VWSessionEntity",
    "VWTurnEntity",
    "ValidationError",
    "VirtualWorker",
]
