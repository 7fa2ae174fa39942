"""The web console's server: one HTML page and its static files, nothing else.

The console is a client of the public API like the SDK: the browser calls `/v1/...` on the same
origin with the API key it holds (`sessionStorage`), so every scope rule, error and limit is the
API's own and the console has no data path of its own. This app only serves files, needs no key
and no database, and runs in `vwm up` (mounted at `/ui`) or alone as the `console` function
(`functions/main.py`) behind an ingress that routes `/ui` to it and `/v1` to the other functions
on the same host (docs/console.md).

Every answer carries a strict Content-Security-Policy: scripts and connections only from this
origin, no inline script, no framing. The page never builds HTML from data (`dom.js`), and the
policy is the second wall if that ever slips.
"""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

STATIC_DIR = Path(__file__).parent / "static"
PREFIX = "/ui"

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        # uPlot sizes its canvas and legend with inline style attributes.
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}
# The page is tiny and names its scripts without a version: revalidate every load, so an upgrade
# is never half old, half new (ETags make the revalidation cheap).
CACHE_CONTROL = "no-cache"


async def page(_: Request) -> Response:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html")


async def to_page(_: Request) -> Response:
    return RedirectResponse(f"{PREFIX}/", status_code=308)


class SecurityHeaders:
    """Pure ASGI middleware: the security and cache headers on every answer of the console."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (name, value)
                    for name, value in message.get("headers", [])
                    if name.lower() != b"cache-control"
                ]
                headers += [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
                headers.append((b"cache-control", CACHE_CONTROL.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


def console_routes() -> list[Route | Mount]:
    """The console's routes under `PREFIX`: the page at `/ui/`, its files at `/ui/static/...`."""
    files = Starlette(
        routes=[
            Route("/", page, methods=["GET", "HEAD"]),
            Mount("/static", StaticFiles(directory=STATIC_DIR)),
        ]
    )
    return [
        Route(PREFIX, to_page, methods=["GET", "HEAD"]),
        Mount(PREFIX, SecurityHeaders(files)),
    ]


async def health(_: Request) -> Response:
    return JSONResponse({"status": "ok"})


def create_console_app() -> Starlette:
    """The console alone (the `console` function): `/` goes to the page; `/healthz` for probes."""
    return Starlette(
        routes=[
            Route("/", to_page, methods=["GET", "HEAD"]),
            Route("/healthz", health, methods=["GET"]),
            *console_routes(),
        ]
    )
