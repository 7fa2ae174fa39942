"""A uvicorn server that sleeps while it is idle.

uvicorn's own main loop wakes ten times a second to see whether it was asked to exit. One
process does not notice; two hundred idle harnesses on one machine do: about 1.5 ms of CPU a
second each, a third of a core spent on nothing, taken from the sessions that work
(docs/performance.md). `QuietServer` wakes once a second (when uvicorn refreshes its Date
header, so answers carry the same dates), and at once when a signal asks it to exit, so a
stop is not slower for it.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import FrameType

import uvicorn

TICK_S = 1.0
# uvicorn refreshes the Date header on ticks that are multiples of 10 (once a second at its
# 0.1 s pace); each of these ticks is a second, so each is such a multiple.
_TICKS_PER_WAKE = 10
_TICK_WRAP = 864_000  # uvicorn's own bound on the counter


class QuietServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._exit_asked: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def main_loop(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._exit_asked = asyncio.Event()
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + _TICKS_PER_WAKE) % _TICK_WRAP
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._exit_asked.wait(), TICK_S)
            should_exit = await self.on_tick(counter)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        # A signal handler runs between two bytecodes of the loop's thread: wake the loop
        # through its self-pipe rather than touching the event directly.
        if self._loop is not None and self._exit_asked is not None:
            self._loop.call_soon_threadsafe(self._exit_asked.set)
