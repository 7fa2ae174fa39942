"""The embedded broker's error tree. `functions.broker.filters` and `functions.broker.delivery`
raise it when a subscription spec cannot be used; the code that loads subscriptions (and any HTTP
edge that accepts them) catches it and reports `code`, `path` and the message.

No web framework here: an edge that accepts subscription specs answers a `BrokerError`'s
`status`, 422 (the spec is well-formed JSON that cannot be used).
"""

from __future__ import annotations

from typing import Any

from functions.errors import FunctionsError


class BrokerError(FunctionsError):
    """Base of every broker error. `code`: a stable name for the edge to report;
    `retryable`: the same call may succeed later; `details`: data for machines."""

    code: str = "broker_failed"
    status: int = 422
    retryable: bool = False

    def __init__(self, message: str, *, code: str | None = None, **details: Any) -> None:
        super().__init__(message, **details)
        if code is not None:
            self.code = code


class InvalidSpec(BrokerError):
    """A subscription's `filter`, `filters` or `delivery` cannot be used as written. `path`
    names the offending field the way a Knative webhook does (``filters[0].all[1].exact``), and
    the message says what to write instead. Codes: ``invalid_filter``, ``unsupported_filter``
    (a dialect Knative has and this broker does not: ``cesql``), ``invalid_delivery``."""

    code = "invalid_filter"

    def __init__(self, message: str, *, path: str, code: str | None = None) -> None:
        super().__init__(f"{path}: {message}", code=code, path=path)
        self.path = path
