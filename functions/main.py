"""Entry points of the four HTTP functions, for functions-framework:

    functions-framework --source functions/main.py --target admin --asgi
    (targets: admin, sessions, prompts, telemetry)

Each target gets every path and hands the request to its own small Starlette app (routes, auth,
errors, `/openapi.json`); `functions.embedded` serves all four from one process for `vwm up`.
Imports stay light: the apps are built on the first request.
"""

from __future__ import annotations

import functools
from importlib import import_module

import functions_framework.aio as ff
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

FUNCTIONS = ("admin", "sessions", "prompts", "telemetry")


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
