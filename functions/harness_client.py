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


class HarnessClient:
    def __init__(self, url: str, token: str, *, timeout_s: float = 30.0) -> None:
        self._client = httpx.AsyncClient(
            base_url=url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(timeout_s, read=None),
        )

    async def __aenter__(self) -> HarnessClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._client.aclose()

    @property
    def files(self) -> HarnessFiles:
        return HarnessFiles(self._client)

    async def health(self) -> dict[str, Any]:
        return await self._json("GET", "/healthz")

    async def bootstrap(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._json("POST", "/v1/bootstrap", json=body)

    async def start_job(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._json("POST", "/v1/jobs", json={**body, "mode": "async"})

    async def job(self, job_id: str) -> dict[str, Any]:
        return await self._json("GET", f"/v1/jobs/{job_id}")

    async def cancel(self, job_id: str) -> dict[str, Any]:
        return await self._json("POST", f"/v1/jobs/{job_id}/cancel")

    async def shutdown(self) -> dict[str, Any]:
        return await self._json("POST", "/v1/shutdown")

    async def events(self, job_id: str, after: int = 0) -> AsyncIterator[SseFrame]:
        """The job's events after `after`, as they come, until the job's log ends."""
        try:
            async with self._client.stream(
                "GET", f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": str(after)}
            ) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise _refused(response)
                async for message in aparse_lines(response.aiter_lines()):
                    yield message
        except httpx.TransportError as exc:
            raise HarnessUnavailable(f"the session's harness stopped answering: {exc}") from None

    async def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = await self._client.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise HarnessUnavailable(
                f"the session's harness did not answer ({exc.__class__.__name__}); "
                "it may be restarting, try again"
            ) from None
        if response.status_code >= 400:
            raise _refused(response)
        return response.json()


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

    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http

    async def list(self, path: str) -> dict[str, Any]:
        return await self._call("GET", "/v1/files", path)

    async def read(self, path: str) -> bytes:
        response = await self._send("GET", "/v1/files/content", path)
        return response.content

    async def write(self, path: str, data: bytes) -> dict[str, Any]:
        return await self._call("PUT", "/v1/files/content", path, content=data)

    async def delete(self, path: str, recursive: bool) -> None:
        await self._send("DELETE", "/v1/files", path, recursive="1" if recursive else "0")

    async def _call(self, method: str, url: str, path: str, **kwargs: Any) -> dict[str, Any]:
        return (await self._send(method, url, path, **kwargs)).json()

    async def _send(
        self, method: str, url: str, path: str, *, content: bytes | None = None, **params: str
    ) -> httpx.Response:
        try:
            response = await self._http.request(
                method, url, params={"path": path, **params}, content=content
            )
        except httpx.TransportError as exc:
            raise HarnessUnavailable(f"the session's harness did not answer: {exc}") from None
        if response.status_code >= 400:
            raise _refused(response)
        return response
