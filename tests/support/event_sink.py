"""A real CloudEvents sink for publisher tests: a Starlette app under uvicorn in the test's event
loop, on a real socket, that decodes each POST with `eventing.codec.from_http` and records it.
It answers 202 (as a Knative broker does) unless the test scripted other answers, and can hold
an answer until the test releases it. `SinkServer` stops and starts again on the same port, so a
test can take the sink down (nothing listening) and bring it back."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from eventing import codec
from eventing.events import EventError, VwmEvent


@dataclass(frozen=True)
class Arrival:
    event: VwmEvent
    status: int  # what the sink answered
    mode: str  # "binary" or "structured"


@dataclass
class Sink:
    answers: deque[int] = field(default_factory=deque)  # scripted statuses, then 202
    arrivals: list[Arrival] = field(default_factory=list)
    hold: asyncio.Event | None = None  # when set to an unset Event, answers wait for it
    hold_from: int = 0  # ... from this arrival on (0: the first)
    held: asyncio.Event = field(default_factory=asyncio.Event)  # set once a request waits

    @property
    def accepted(self) -> list[VwmEvent]:
        return [arrival.event for arrival in self.arrivals if 200 <= arrival.status < 300]

    @property
    def ids(self) -> list[str]:
        return [event.id for event in self.accepted]

    async def receive(self, request: Request) -> Response:
        try:
            event = codec.from_http(dict(request.headers), await request.body())
        except EventError as exc:
            return JSONResponse({"code": exc.code, "message": exc.message}, status_code=exc.status)
        status = self.answers.popleft() if self.answers else 202
        mode = "binary" if "ce-specversion" in request.headers else "structured"
        self.arrivals.append(Arrival(event, status, mode))
        if self.hold is not None and len(self.arrivals) > self.hold_from:
            self.held.set()
            await self.hold.wait()
        if status == 202:
            return Response(status_code=202)
        return JSONResponse({"code": "scripted", "message": f"answered {status}"}, status)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/", self.receive, methods=["POST"])])


class SinkServer:
    """``await server.start()`` / ``await server.stop()``, any number of times, one port."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        probe = socket.create_server(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._socket: socket.socket | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    async def start(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", self.port))  # SO_REUSEADDR on POSIX
        config = uvicorn.Config(self.sink.app(), log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]))
        async with asyncio.timeout(10):
            while not self._server.started:  # noqa: ASYNC110 (uvicorn has no event for it)
                await asyncio.sleep(0.005)

    async def stop(self) -> None:
        if self._server is None or self._task is None or self._socket is None:
            return
        if self.sink.hold is not None:
            self.sink.hold.set()
        self._server.should_exit = True
        await asyncio.wait_for(self._task, 10)
        self._socket.close()
        self._server = self._task = self._socket = None


@contextlib.asynccontextmanager
async def serving(sink: Sink) -> AsyncIterator[SinkServer]:
    """`sink` served on a local port for the block's duration."""
    server = SinkServer(sink)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
