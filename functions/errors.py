"""The control plane's one error base. Every error a function, service or adapter raises on
purpose is a `FunctionsError`: the data layer's (`functions.db.errors`), the runtime backends'
(`functions.runtime.errors`), the harness client's, the broker's, the repository policy's and the
HTTP edge's own `ApiError`.

Each kind states its HTTP status and whether a retry can succeed on its class (see
`eventing.errors.VwmError`), so the HTTP edge answers any of them the same way:
``error_response(exc.status, exc.code, exc.message, **exc.details)``. No module below the edge
imports a web framework for that.
"""

from __future__ import annotations

from eventing.errors import VwmError


class FunctionsError(VwmError):
    """Base of every error the control plane reports. Unknown kinds are a 500 ``internal``."""
