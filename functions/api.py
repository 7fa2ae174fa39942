"""Endpoints declared once, served by Starlette and described by OpenAPI from the same table.

Each function module (`admin`, `sessions`, `prompts`, `telemetry`) exports a list of `Endpoint`s.
`build_app` turns lists of them into one Starlette app (one function alone in production, all of
them in `vwm up`), and `openapi_document` describes exactly those routes, with request and response
schemas taken from the pydantic models the handlers validate with.

The app's state is built in its lifespan, never at import nor in module globals: one
`functions.services.Services` (settings, engine, runtime backend, harness HTTP pool), in the
lifespan state as ``services`` (so ``request.state.services``), bound by `BindServices` for each
request so the accessors of `functions.context` reach it from anywhere the request's code runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from eventing.errors import ErrorBody
from eventing.http_metrics import METRICS_PATH, HttpMetrics
from eventing.http_tracing import HttpTracing
from eventing.inputs import PATH_SEGMENT_PATTERN
from functions.http import ApiKeyAuth, ErrorBoundary, InputGuard, KeyLookup, handle_error
from functions.metrics_scrape import metrics
from functions.services import Services, ServicesNotBound, bound

Handler = Callable[[Request], Awaitable[Response]]
# A Starlette lifespan: entered at start-up (with the app's `Services` bound), left at shutdown;
# what it yields joins the lifespan state.
Lifespan = Callable[[Starlette], contextlib.AbstractAsyncContextManager[Mapping[str, Any] | None]]

# What `InputGuard` lets through as a path segment; anything else is 400 `invalid_parameter`.
PATH_PARAMETER = {"type": "string", "pattern": f"^{PATH_SEGMENT_PATTERN}$"}

ERROR_CODES = {
    400: "Malformed request",
    401: "Missing or wrong API key",
    403: "The key's scope does not allow this",
    404: "Not found",
    409: "Conflict with the current state",
    413: "Body too large",
    415: "The body is not JSON (Content-Type)",
    422: "Invalid request",
}


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    handler: Handler
    summary: str
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    headers: tuple[tuple[str, dict[str, Any]], ...] = ()  # (name, JSON schema) read by the handler
    response: type[BaseModel] | None = None
    status: int = 200
    other_statuses: tuple[int, ...] = ()
    sse: bool = False
    binary: bool = False  # answers application/octet-stream
    binary_body: bool = False  # takes a raw application/octet-stream body
    public: bool = False
    tags: tuple[str, ...] = field(default_factory=tuple)


async def health(_: Request) -> Response:
    return JSONResponse({"status": "ok"})


def build_app(
    endpoints: Sequence[Endpoint],
    lookup: KeyLookup,
    *,
    title: str,
    lifespan: Lifespan | None = None,
    services: Services | None = None,
    close_services: bool | None = None,
    relay_outbox: bool = True,
    extra_routes: Sequence[BaseRoute] = (),
) -> Starlette:
    """The Starlette app serving `endpoints`. Its lifespan builds the app's `Services` from the
    environment, or uses `services` (tests, `vwm up`), puts them in the lifespan state, runs
    `lifespan` inside with them bound (tasks it starts inherit them), and closes them at
    shutdown when it built them or `close_services` says so. Given `services` also serve a
    request whose server ran no lifespan (``httpx.ASGITransport`` in a test).

    With an event sink configured (``VWM_EVENT_SINK`` or ``K_SINK``) the lifespan also relays
    the services' outbox to it (`functions.outbox_relay.relaying`) unless `relay_outbox` is
    False (`vwm up`, whose embedded broker drains the outbox itself).

    `extra_routes`: routes outside the API's table (the console's pages in `vwm up`); they pass
    the same middleware, so only paths `functions.http.is_public` lets through need no key."""
    document: dict[str, Any] = {}

    async def openapi(_: Request) -> Response:
        if not document:
            document.update(openapi_document(endpoints, title=title))
        return JSONResponse(document)

    @contextlib.asynccontextmanager
    async def app_lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        from functions.outbox_relay import relaying

        own = services if services is not None else Services.build()
        try:
            with bound(own):
                async with relaying(own, enabled=relay_outbox):
                    if lifespan is None:
                        yield {"services": own}
                    else:
                        async with lifespan(app) as state:
                            yield {**(state or {}), "services": own}
        finally:
            if close_services if close_services is not None else services is None:
                await own.aclose()

    routes = [
        Route("/healthz", health, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route(METRICS_PATH, metrics, methods=["GET"]),  # needs an API key (docs/metrics.md)
        *_routes_by_path(endpoints),
        *extra_routes,
    ]
    return Starlette(
        routes=routes,
        middleware=[
            Middleware(HttpTracing, routes=routes),  # outermost: refusals are traced too
            Middleware(HttpMetrics, routes=routes),  # refusals count too
            # Next: key lookups and error mappers already need the database.
            Middleware(BindServices, fallback=services),
            Middleware(ApiKeyAuth, lookup=lookup),
            Middleware(ErrorBoundary),
            Middleware(InputGuard),
        ],
        exception_handlers={HTTPException: handle_error},
        lifespan=app_lifespan,
    )


class BindServices:
    """Pure ASGI middleware (streaming-safe: the binding lasts until the response's last byte is
    sent): binds the app's `Services`, from the lifespan state, to the request's context, where
    `functions.context` reads them. `fallback`: the services to use when no lifespan ran."""

    def __init__(self, app: ASGIApp, fallback: Services | None = None) -> None:
        self.app = app
        self._fallback = fallback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        state = scope.get("state") or {}
        services = state.get("services") or self._fallback
        if services is None:
            raise ServicesNotBound(
                "this app's lifespan did not run, so it has no services: serve it with a server "
                "that runs ASGI lifespans (uvicorn), or in a test with Starlette's TestClient or "
                "asgi_lifespan.LifespanManager, or build it with build_app(..., services=...)"
            )
        scope["state"] = {**state, "services": services}
        with bound(services):
            await self.app(scope, receive, send)


def _routes_by_path(endpoints: Sequence[Endpoint]) -> list[Route]:
    """One route per path that dispatches on the method, so a 405 lists every allowed method."""
    by_path: dict[str, dict[str, Handler]] = {}
    for endpoint in endpoints:
        by_path.setdefault(endpoint.path, {})[endpoint.method] = endpoint.handler
    return [
        Route(path, _dispatcher(handlers), methods=list(handlers))
        for path, handlers in by_path.items()
    ]


def _dispatcher(handlers: dict[str, Handler]) -> Handler:
    async def dispatch(request: Request) -> Response:
        return await handlers[request.method if request.method in handlers else "GET"](request)

    return dispatch


def openapi_document(endpoints: Iterable[Endpoint], *, title: str) -> dict[str, Any]:
    endpoints = list(endpoints)
    models = {m for e in endpoints for m in (e.body, e.response, e.query) if m is not None}
    models.add(ErrorBody)  # the one error body (eventing.errors), as every error answer has it
    keyed: list[tuple[type[BaseModel], Literal["validation"]]] = [
        (m, "validation") for m in sorted(models, key=lambda m: m.__name__)
    ]
    _, defs = models_json_schema(keyed, ref_template="#/components/schemas/{model}")
    schemas: dict[str, Any] = defs.get("$defs", {})
    schemas["Error"] = {"$ref": "#/components/schemas/ErrorBody"}
    paths: dict[str, Any] = {}
    for endpoint in endpoints:
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = _operation(endpoint)
    paths["/healthz"] = {
        "get": {"summary": "Liveness", "security": [], "responses": {"200": {"description": "OK"}}}
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": "1"},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"apiKey": []}],
    }


def _operation(endpoint: Endpoint) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": endpoint.summary,
        "operationId": endpoint.handler.__name__,
        "parameters": [
            {"name": name, "in": "path", "required": True, "schema": PATH_PARAMETER}
            for name in _path_params(endpoint.path)
        ],
    }
    if endpoint.tags:
        operation["tags"] = list(endpoint.tags)
    if endpoint.query is not None:
        for name, info in endpoint.query.model_json_schema()["properties"].items():
            operation["parameters"].append(
                {"name": name, "in": "query", "required": False, "schema": info}
            )
    for name, schema in endpoint.headers:
        operation["parameters"].append(
            {"name": name, "in": "header", "required": False, "schema": schema}
        )
    if endpoint.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(endpoint.body)}},
        }
    elif endpoint.binary_body:
        operation["requestBody"] = {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    success: dict[str, Any] = {"description": endpoint.summary}
    if endpoint.sse:
        success["content"] = {"text/event-stream": {"schema": {"type": "string"}}}
    elif endpoint.binary:
        success["content"] = {
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
        }
    elif endpoint.response is not None:
        success["content"] = {"application/json": {"schema": _ref(endpoint.response)}}
    responses: dict[str, Any] = {str(endpoint.status): success}
    for status in endpoint.other_statuses:
        responses[str(status)] = success if status < 300 else _error(status)
    # 400: a malformed path segment or query parameter (`invalid_parameter`) or body.
    errors = [401, 400, 422] if endpoint.body or endpoint.query else [401, 400]
    if "{" in endpoint.path:
        errors.append(404)
    if endpoint.body is not None:
        errors.extend((413, 415))
    for status in errors:
        responses.setdefault(str(status), _error(status))
    if endpoint.public:
        operation["security"] = []
    operation["responses"] = responses
    return operation


def _error(status: int) -> dict[str, Any]:
    return {
        "description": ERROR_CODES.get(status, "Error"),
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _ref(model: type[BaseModel]) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _path_params(path: str) -> list[str]:
    return [part[1:-1].split(":")[0] for part in path.split("/") if part.startswith("{")]
