"""The control plane's HTTP client for one session's harness (see docs/harness.md).

Functions never import `harness`: they speak its versioned HTTP API through this module. Errors
become `HarnessUnavailable` (the harness did not answer: retry later) or `HarnessRefused` (it
answered with an error JSON; the code and message are passed on to the caller).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from eventing.sse import SseFrame, aparse_lines


class HarnessCallError(Exception):
    status_code = 502
    code = "harness_unavailable"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class HarnessUnavailable(HarnessCallError):
    """No answer (connection refused, timeout): the session's harness is down or starting."""


class HarnessRefused(HarnessCallError):
    """The harness answered with an error; `code` is the harness's own stable code."""

    def __init__(self, status: int, code: str, message: str, **details: Any) -> None:
        super().__init__(message, **details)
        self.status_code = status if 400 <= status < 500 else 502
        self.code = code


_pool: httpx.AsyncClient | None = None


def _shared_pool() -> httpx.AsyncClient:
    """One connection pool for every harness call of this process: building an httpx client
    costs milliseconds of CPU (TLS context), too much to pay on every call of every prompt."""
    global _pool
    if _pool is None or _pool.is_closed:
        _pool = httpx.AsyncClient(
            timeout=httpx.Timeout(30.0, read=None),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=200),
        )
    return _pool


class HarnessClient:
    """Calls to one harness (its base URL and session token) over the shared pool."""

    def __init__(self, url: str, token: str) -> None:
        self._base = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        self._http = _shared_pool()

    async def __aenter__(self) -> HarnessClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None  # the pool outlives a client; nothing to release

    @property
    def files(self) -> HarnessFiles:
        return HarnessFiles(self)

    async def health(self) -> dict[str, Any]:
        return (await self.send("GET", "/healthz")).json()

    async def bootstrap(self, body: dict[str, Any]) -> dict[str, Any]:
        return (await self.send("POST", "/v1/bootstrap", json=body)).json()

    async def start_job(self, body: dict[str, Any]) -> dict[str, Any]:
        return (await self.send("POST", "/v1/jobs", json={**body, "mode": "async"})).json()

    async def job(self, job_id: str) -> dict[str, Any]:
        return (await self.send("GET", f"/v1/jobs/{job_id}")).json()

    async def cancel(self, job_id: str) -> dict[str, Any]:
        return (await self.send("POST", f"/v1/jobs/{job_id}/cancel")).json()

    async def shutdown(self) -> dict[str, Any]:
        return (await self.send("POST", "/v1/shutdown")).json()

    async def events(self, job_id: str, after: int = 0) -> AsyncIterator[SseFrame]:
        """The job's events after `after`, as they come, until the job's log ends."""
        headers = {**self._headers, "Last-Event-ID": str(after)}
        try:
            async with self._http.stream(
                "GET", f"{self._base}/v1/jobs/{job_id}/events", headers=headers
            ) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise _refused(response)
                async for message in aparse_lines(response.aiter_lines()):
                    yield message
        except httpx.TransportError as exc:
            raise HarnessUnavailable(f"the session's harness stopped answering: {exc}") from None

    async def send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One call; an error answer raises `HarnessRefused`, no answer `HarnessUnavailable`."""
        try:
            response = await self._http.request(
                method, self._base + path, headers=self._headers, **kwargs
            )
        except httpx.TransportError as exc:
            raise HarnessUnavailable(
                f"the session's harness did not answer ({exc.__class__.__name__}); "
                "it may be restarting, try again"
            ) from None
        if response.status_code >= 400:
            raise _refused(response)
        return response


def _refused(response: httpx.Response) -> HarnessRefused:
    try:
        error = response.json()["error"]
        return HarnessRefused(
            response.status_code, error["code"], error["message"], **error.get("details", {})
        )
    except (ValueError, KeyError, TypeError):
        return HarnessRefused(
            response.status_code, "harness_error", f"the harness answered {response.status_code}"
        )


def decode(message: SseFrame) -> dict[str, Any]:
    return json.loads(message.data)


class HarnessFiles:
    """The harness's file endpoints (workspace-confined there), for the session files API."""

    def __init__(self, harness: HarnessClient) -> None:
        self._harness = harness

    async def list(self, path: str) -> dict[str, Any]:
        return (await self._harness.send("GET", "/v1/files", params={"path": path})).json()

    async def read(self, path: str) -> bytes:
        response = await self._harness.send("GET", "/v1/files/content", params={"path": path})
        return response.content

    async def write(self, path: str, data: bytes) -> dict[str, Any]:
        response = await self._harness.send(
            "PUT", "/v1/files/content", params={"path": path}, content=data
        )
        return response.json()

    async def delete(self, path: str, recursive: bool) -> None:
        params = {"path": path, "recursive": "1" if recursive else "0"}
        await self._harness.send("DELETE", "/v1/files", params=params)
