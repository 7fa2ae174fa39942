"""Serve an ASGI app in this process and event loop, lifespan included: `serving(app)`.

``httpx.ASGITransport`` runs no lifespan and gives requests no lifespan state, and Starlette's
`TestClient` runs the app in a thread of its own. `serving` runs the lifespan's start-up, hands
each request the state it yielded (as a server does), and runs its shutdown at exit, so a test
drives several apps at once in one loop and awaits their background work directly.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import httpx
from starlette.types import ASGIApp, Receive, Scope, Send


class LifespanError(RuntimeError):
    """The app's lifespan failed to start or to stop; the message is its traceback."""


@contextlib.asynccontextmanager
async def serving(
    app: ASGIApp, *, base_url: str = "http://app"
) -> AsyncIterator[httpx.AsyncClient]:
    state: dict[str, Any] = {}
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[MutableMapping[str, Any]] = asyncio.Queue()
    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": state}
    task: asyncio.Task[None] = asyncio.create_task(
        app(scope, inbox.get, outbox.put)  # type: ignore[arg-type]
    )

    async def expect(phase: str) -> None:
        await inbox.put({"type": f"lifespan.{phase}"})
        answer = asyncio.create_task(outbox.get())
        await asyncio.wait({answer, task}, return_when=asyncio.FIRST_COMPLETED)
        if not answer.done():
            answer.cancel()
            task.result()  # raises what ended the lifespan
            raise LifespanError(f"the lifespan ended during {phase}")
        message = answer.result()
        if message["type"] != f"lifespan.{phase}.complete":
            raise LifespanError(message.get("message", message["type"]))

    await expect("startup")
    try:
        transport = httpx.ASGITransport(app=_WithState(app, state))
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
            yield client
    finally:
        await expect("shutdown")
        await task


class _WithState:
    """Each request gets a copy of the lifespan state, as uvicorn gives it."""

    def __init__(self, app: ASGIApp, state: dict[str, Any]) -> None:
        self.app = app
        self._state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app({**scope, "state": dict(self._state)}, receive, send)
