"""Runtime backends: provision, find and tear down one harness per session.

The contract is `functions.runtime.base.RuntimeBackend`; implementations live in their own modules
(`functions.runtime.local` for the embedded default) and are imported only by whoever picks one.
See docs/runtime.md.
"""

from functions.runtime.base import (
    RESERVED_ENV,
    HarnessEndpoint,
    HarnessSpec,
    HarnessStatus,
    RuntimeBackend,
    RuntimeHandle,
)
from functions.runtime.errors import (
    HarnessMissing,
    HarnessNotReady,
    HarnessStartFailed,
    InvalidHarnessSpec,
    RuntimeBackendError,
    SessionExists,
    TeardownFailed,
)

__all__ = [
    "RESERVED_ENV",
    "HarnessEndpoint",
    "HarnessMissing",
    "HarnessNotReady",
    "HarnessSpec",
    "HarnessStartFailed",
    "HarnessStatus",
    "InvalidHarnessSpec",
    "RuntimeBackend",
    "RuntimeBackendError",
    "RuntimeHandle",
    "SessionExists",
    "TeardownFailed",
]
