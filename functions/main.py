"""Entry points of the five HTTP functions, for functions-framework:

    functions-framework --source functions/main.py --target admin --asgi
    (targets: admin, sessions, prompts, telemetry, subscriptions, console)

and of the CloudEvent function, behind a Knative Trigger:

    functions-framework --source functions/main.py --target events --asgi \
        --signature-type cloudevent

Each HTTP target gets every path and hands the request to its own small Starlette app (routes,
auth, errors, `/openapi.json`, built by `functions.api.build_app`); `functions.embedded` serves
all of them, `events` at `POST /v1/events`, from one process for `vwm up`. Imports stay light: the
apps are built on the first request.

functions-framework serves its own Starlette app, which has no lifespan of ours, and never runs
the lifespan of the app a target hands its request to. So the first request of a process runs
that lifespan itself (`Started`, under a lock): it builds the function's `Services` (settings,
engine, backend, harness pool), and every request then gets them in its state, as under any
server. The lifespan's shutdown runs when the server stops: its task is cancelled at exit, which
closes the services. The `events` target has no app between it and the framework: it binds the
`Services` of the `events` app's lifespan around its own call.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
from collections.abc import Mapping
from importlib import import_module
from typing import Any

import functions_framework.aio as ff
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from eventing.logs import configure_logging
from eventing.tracing import CONTROL_PLANE_SERVICE, TracingSettingsError, configure_tracing
from functions.errors import FunctionsError

HTTP_FUNCTIONS = ("admin", "sessions", "prompts", "telemetry", "subscriptions")
FUNCTIONS = (*HTTP_FUNCTIONS, "events")  # every module with ENDPOINTS, served by `vwm up`
# Targets with no API of their own: the web console's files (functions.console).
STATIC_FUNCTIONS = ("console",)


def _log_as_vwm() -> None:
    """JSON lines at ``VWM_LOG_LEVEL`` (`eventing.logs`), as `vwm up` and the harness log,
    unless whatever loaded this module set up logging already (a test runner, a server that
    embeds the functions): functions-framework itself leaves the root logger alone."""
    if not logging.getLogger().handlers:
        configure_logging()


_log_as_vwm()


def trace_as_vwm() -> None:
    """Traces as the ``OTEL_*`` variables ask (`eventing.tracing`; off without them), set up as
    the process starts; a setting that cannot work stops it, as the functions' own do."""
    try:
        configure_tracing(CONTROL_PLANE_SERVICE)
    except TracingSettingsError as exc:
        print(f"vwm: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


trace_as_vwm()


@functools.cache
def function_app(name: str) -> Started:
    """The app of function `name` in this process. Cached because functions-framework gives a
    target no object of its own to keep it on; the app holds no state until its lifespan runs."""
    from functions.api import build_app
    from functions.context import lookup_key

    module = import_module(f"functions.{name}")
    return Started(build_app(module.ENDPOINTS, lookup_key, title=f"VWM {name}"))


class LifespanFailed(FunctionsError):
    """The function's app could not start (its settings, most likely): the message says why."""

    code = "function_start_failed"
    status = 503
    retryable = True  # the next request tries to start it again


class Started:
    """An ASGI app whose lifespan starts on the first request (a server that does not run it
    hands us requests only) and ends when that task is cancelled at the server's exit."""

    def __init__(self, app: Starlette) -> None:
        self.app = app
        self._state: Mapping[str, Any] | None = None
        self._lock: asyncio.Lock | None = None
        self._task: asyncio.Task[None] | None = None

    async def state(self) -> Mapping[str, Any]:
        """The lifespan state (``services``, ...), starting the lifespan if it has not run.
        A start that fails raises `LifespanFailed` and is tried again by the next request."""
        if self._state is None:
            self._lock = self._lock or asyncio.Lock()
            async with self._lock:
                if self._state is None:
                    self._state = await self._start()
        return self._state

    async def _start(self) -> Mapping[str, Any]:
        loop = asyncio.get_running_loop()
        state: dict[str, Any] = {}
        started: asyncio.Future[None] = loop.create_future()
        messages = iter([{"type": "lifespan.startup"}])
        never = asyncio.Event()  # no shutdown message: the task is cancelled at exit

        async def receive() -> dict[str, Any]:
            message = next(messages, None)
            if message is not None:
                return message
            await never.wait()
            return {"type": "lifespan.shutdown"}

        async def send(message: Mapping[str, Any]) -> None:
            if started.done():
                return
            if message["type"] == "lifespan.startup.complete":
                started.set_result(None)
            elif message["type"] == "lifespan.startup.failed":
                started.set_exception(LifespanFailed(message.get("message", "")))

        def ended(task: asyncio.Task[None]) -> None:
            # A failed start's traceback already went to `started`; at exit, nobody is waiting.
            failure = None if task.cancelled() else task.exception()
            if not started.done():
                message = f"the app's lifespan ended before it started: {failure!r}"
                started.set_exception(LifespanFailed(message))

        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": state}
        task = loop.create_task(self.app(scope, receive, send), name="function-lifespan")  # type: ignore[arg-type]
        task.add_done_callback(ended)
        try:
            await started
        except LifespanFailed:
            if not task.done():
                task.cancel()
            raise
        self._task = task
        return state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = await self.state()
        await self.app({**scope, "state": {**scope.get("state", {}), **state}}, receive, send)


class _Delegate(Response):
    """A response that lets the function's own app answer the untouched request."""

    def __init__(self, app: Started) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)


@ff.http
async def admin(request: Request) -> Response:
    return _Delegate(function_app("admin"))


@ff.http
async def sessions(request: Request) -> Response:
    return _Delegate(function_app("sessions"))


@ff.http
async def prompts(request: Request) -> Response:
    return _Delegate(function_app("prompts"))


@ff.http
async def telemetry(request: Request) -> Response:
    return _Delegate(function_app("telemetry"))


@ff.http
async def subscriptions(request: Request) -> Response:
    return _Delegate(function_app("subscriptions"))


@functools.cache
def _console() -> Any:
    from functions.console.app import create_console_app

    return create_console_app()


@ff.http
async def console(request: Request) -> Response:
    """The web console's files (no key, no database: functions.console.app)."""

    class Files(Response):
        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            await _console()(scope, receive, send)

    return Files()


@ff.cloud_event
async def events(event: Any) -> None:
    """A Knative Trigger's delivery. functions-framework answers 200 when this returns; a
    refusal is its status with the JSON error as text. `event` is the CloudEvents SDK's, which
    only `eventing.codec` may name. No API key: in production only the
    Broker reaches this service (cluster-local), as docs/events.md says."""
    import json

    from eventing.codec import from_cloudevent
    from eventing.events import EventError
    from functions.events import EventsUnavailable, receive, refusal
    from functions.services import bound

    state = await function_app("events").state()
    try:
        with bound(state["services"]):
            await receive(from_cloudevent(event))
    except (EventError, EventsUnavailable) as exc:
        error = refusal(exc)
        raise HTTPException(error.status, detail=json.dumps(error.to_body())) from None
