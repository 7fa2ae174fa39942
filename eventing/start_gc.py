"""The garbage collector paused for a process's start, resumed at its first answer: shared by the
harness (`harness.__main__`) and the functions image's entry point (`functions.serve`).

A cold start allocates hundreds of thousands of objects that all live (modules, classes, the
app), and the collections that scan them again and again cost about a tenth of it. The entry
point pauses collection (``gc.disable()``) before its imports; `CollectAfterFirstAnswer` wraps
the app and, once the first answer begins (for a harness, the control plane's readiness probe),
freezes what was made so far (never scanned again) and resumes collection for what requests
allocate. Around an app whose process never paused it, it changes nothing.
"""

from __future__ import annotations

import gc
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class CollectAfterFirstAnswer:
    """Resumes the garbage collector, paused for the start, once the first HTTP answer begins
    (or its request fails): the objects made so far are frozen, never scanned again."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.resumed = False

    def resume(self) -> None:
        if not self.resumed:
            self.resumed = True
            gc.freeze()
            gc.enable()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.resumed or scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_resuming(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.resume()
            await send(message)

        try:
            await self.app(scope, receive, send_resuming)
        finally:
            self.resume()
