"""What the Knative controller says of a Service (its status), read the same way by the backend
(`functions.runtime.knative`) and its warm pool (`functions.runtime.knative_pool`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def readiness(service: Mapping[str, Any]) -> tuple[str, str, str]:
    """The ``Ready`` condition of the Service's current generation: its status (``True``,
    ``False``, ``Unknown``), reason and message. A status of an older generation is
    ``Unknown``: the controller has not looked at this one yet."""
    status = service.get("status") or {}
    generation = (service.get("metadata") or {}).get("generation")
    if generation is not None and status.get("observedGeneration") != generation:
        return "Unknown", "", "the Knative controller has not seen this generation yet"
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Ready":
            return (
                str(condition.get("status", "Unknown")),
                str(condition.get("reason", "")),
                str(condition.get("message", "")),
            )
    return "Unknown", "", ""


def terminating(obj: Mapping[str, Any]) -> bool:
    """Deleted, and waiting for its dependents (a foreground deletion): no longer running."""
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))


def address(service: Mapping[str, Any]) -> str | None:
    status = service.get("status") or {}
    url = (status.get("address") or {}).get("url") or status.get("url")
    return str(url).rstrip("/") if url else None


def ready_address(service: Mapping[str, Any]) -> str | None:
    """The address of a Service whose current generation is Ready and not being deleted."""
    if terminating(service) or readiness(service)[0] != "True":
        return None
    return address(service)
