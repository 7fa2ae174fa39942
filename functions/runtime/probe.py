"""Readiness probing of a harness over HTTP, shared by the runtime backends.

A harness is ready for us when ``GET /healthz`` answers 200 with the expected CLI *and* an
authenticated ``GET /v1/files?path=.`` answers 200 with the session token. The second request
proves the port is served by this session's harness, not by another one that took the port
after ours died (tokens are unique per session). Nothing here raises: the caller decides what a
harness that does not answer means.
"""

from __future__ import annotations

import httpx

from eventing.tls import verified_context
from functions.runtime.base import HarnessEndpoint


def client(timeout_s: float) -> httpx.AsyncClient:
    """A probe client: short timeouts, and no proxy from the environment (the harness is local or
    in-cluster, never behind the caller's HTTP proxy)."""
    # The process's one TLS context: a client is made for every readiness wait, and a context
    # of its own would load the CA bundle each time (eventing.tls).
    return httpx.AsyncClient(timeout=timeout_s, trust_env=False, verify=verified_context())


async def answers(
    http: httpx.AsyncClient, endpoint: HarnessEndpoint, cli: str, timeout_s: float
) -> bool:
    """One readiness check, each request bounded by `timeout_s`."""
    return await _owned_status(http, endpoint, cli, timeout_s) == 200


async def refuses_token(
    http: httpx.AsyncClient, endpoint: HarnessEndpoint, cli: str, timeout_s: float
) -> bool:
    """True only when a harness of `cli` answers there and refuses `endpoint.token` (401): it
    was started with another token and will never be ready for this one."""
    return await _owned_status(http, endpoint, cli, timeout_s) == 401


async def _owned_status(
    http: httpx.AsyncClient, endpoint: HarnessEndpoint, cli: str, timeout_s: float
) -> int | None:
    """The status of the authenticated request, or None when no harness of `cli` answers."""
    try:
        health = await http.get(f"{endpoint.url}/healthz", timeout=timeout_s)
        if health.status_code != 200 or health.json().get("cli") != cli:
            return None
        owned = await http.get(
            f"{endpoint.url}/v1/files",
            params={"path": "."},
            headers={"Authorization": f"Bearer {endpoint.token}"},
            timeout=timeout_s,
        )
    except (httpx.HTTPError, ValueError, AttributeError):
        return None  # not listening yet, not JSON, not a JSON object: not ready
    return owned.status_code
