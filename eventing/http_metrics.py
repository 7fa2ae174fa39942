"""HTTP request metrics, the same on both servers (the control plane and each harness), and the
``GET /metrics`` answer in Prometheus's text format.

`HttpMetrics` counts every answered request and times it by the route's template (the path as
declared, ``/v1/sessions/{session_id}``), never the raw path: label values must stay few, and a
raw path holds ids. The template is found by matching the request against the app's routes
before the app runs, so a request refused before routing (401, 400 from the input guard) still
has its route. Everything lives in prometheus_client's default registry: one per process.
docs/metrics.md lists every metric.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Histogram, generate_latest
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

METRICS_PATH = "/metrics"
# The label of a path no route matches (a 404 of the router itself): one value for all of them.
UNMATCHED = "unmatched"
# Methods outside this set are counted as "other": a client may send any token as a method.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

HTTP_REQUESTS = Counter(
    "vwm_http_requests_total",
    "HTTP requests answered, by method, route template and status code.",
    ["method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "vwm_http_request_duration_seconds",
    "Time from a request's arrival to its answer's last byte (an event stream: its whole life).",
    ["method", "route"],
)


def route_template(routes: Sequence[BaseRoute], scope: Scope) -> str:
    """The declared path of the route `scope` goes to; a route whose path matches but not its
    method (a 405) counts as that route. `UNMATCHED` when no path matches."""
    partial = None
    for route in routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return str(getattr(route, "path", UNMATCHED))
        if match is Match.PARTIAL and partial is None:
            partial = str(getattr(route, "path", UNMATCHED))
    return partial or UNMATCHED


class HttpMetrics:
    """Pure ASGI middleware (streaming-safe): counts and times each HTTP request by method,
    route template and status. Put it outermost, so refusals by the other middleware count.
    A request whose app raised before answering counts as 500, as the server answers it."""

    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self._routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"] if scope["method"] in _METHODS else "other"
        route = route_template(self._routes, scope)
        status = 500
        started = time.perf_counter()

        async def observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed)
        finally:
            HTTP_DURATION.labels(method, route).observe(time.perf_counter() - started)
            HTTP_REQUESTS.labels(method, route, str(status)).inc()


def exposition(registry: Collector = REGISTRY) -> Response:
    """Everything `registry` collects, as Prometheus's text format."""
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


async def metrics(_: Request) -> Response:
    """``GET /metrics``: the process's default registry."""
    return exposition()
