"""Server spans for HTTP requests, the same on both servers (the control plane and each harness).

`HttpTracing` is opentelemetry-instrumentation-asgi's middleware (the request's incoming W3C
``traceparent`` becomes the span's parent; semantic-convention HTTP attributes) with two VWM
choices: the span is named ``{method} {route template}`` (``GET /v1/jobs/{job_id}``), never by
the raw path, which holds ids (the template comes from `eventing.http_metrics.route_template`,
as the metrics' `route` label does); and no span per ASGI message, so an event stream that
lives for hours is one span, not one per frame. With tracing off (`eventing.tracing.enabled`)
the request goes straight to the app: one attribute read per request.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from eventing import tracing
from eventing.http_metrics import UNMATCHED, route_template

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

# The OTel semantic conventions' attribute for the route template.
HTTP_ROUTE = "http.route"
# A span is named by one of these; any other method as "HTTP" (a client may send any token).
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class HttpTracing:
    """Pure ASGI middleware: a server span per HTTP request while tracing is on. Put it
    outermost, so the span covers the refusals of the other middleware too."""

    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self._routes = routes
        self._traced: tuple[TracerProvider, ASGIApp] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        chosen = tracing.provider()
        if chosen is None or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self._middleware(chosen)(scope, receive, send)

    def _middleware(self, chosen: TracerProvider) -> ASGIApp:
        """The instrumentation's middleware for `chosen`, built once (again only when a test
        swaps the provider)."""
        if self._traced is None or self._traced[0] is not chosen:
            from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

            middleware = OpenTelemetryMiddleware(
                self.app,
                default_span_details=self._span_details,
                tracer_provider=chosen,
                exclude_spans=["receive", "send"],
            )
            self._traced = (chosen, middleware)
        return self._traced[1]

    def _span_details(self, scope: Scope) -> tuple[str, dict[str, Any]]:
        method = str(scope.get("method"))
        method = method if method in _METHODS else "HTTP"
        route = route_template(self._routes, scope)
        if route == UNMATCHED:  # a 404 of the router: the method alone, as the conventions say
            return method, {}
        return f"{method} {route}", {HTTP_ROUTE: route}
