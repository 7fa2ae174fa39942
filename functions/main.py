"""Entry points of the four HTTP functions, for functions-framework:

    functions-framework --source functions/main.py --target admin --asgi
    (targets: admin, sessions, prompts, telemetry)

and of the CloudEvent function, behind a Knative Trigger:

    functions-framework --source functions/main.py --target events --asgi \
        --signature-type cloudevent

Each HTTP target gets every path and hands the request to its own small Starlette app (routes,
auth, errors, `/openapi.json`); `functions.embedded` serves all of them, `events` at
`POST /v1/events`, from one process for `vwm up`. Imports stay light: the apps are built on the
first request.
"""

from __future__ import annotations

import functools
from importlib import import_module
from typing import Any

import functions_framework.aio as ff
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

HTTP_FUNCTIONS = ("admin", "sessions", "prompts", "telemetry")
FUNCTIONS = (*HTTP_FUNCTIONS, "events")  # every module with ENDPOINTS, served by `vwm up`


@functools.cache
def function_app(name: str) -> Starlette:
    from functions.api import build_app
    from functions.context import lookup_key

    module = import_module(f"functions.{name}")
    return build_app(module.ENDPOINTS, lookup_key, title=f"VWM {name}")


class _Delegate(Response):
    """A response that lets the function's own app answer the untouched request."""

    def __init__(self, app: Starlette) -> None:
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

    try:
        await receive(from_cloudevent(event))
    except (EventError, EventsUnavailable) as exc:
        error = refusal(exc)
        body = {"error": {"code": error.code, "message": error.message, "details": error.details}}
        raise HTTPException(error.status, detail=json.dumps(body)) from None
