"""The HTTP edge of the control plane: API-key auth, body limits, errors as JSON with stable codes.

Services raise `functions.errors.FunctionsError`s (`functions.db.errors`, `functions.runtime`,
`functions.harness_client`, `ApiError`), each stating its status and code; only this module (and
the mapper `functions.context` registers) turns them into responses. A caller never sees a
traceback.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from eventing.errors import ErrorBody, VwmError
from eventing.inputs import (
    ascii_uint,
    check_json_content_type,
    check_path,
    check_query,
    load_json_object,
)
from functions.errors import FunctionsError

logger = logging.getLogger(__name__)

Model = TypeVar("Model", bound=BaseModel)

PUBLIC_PATHS = frozenset({"/healthz", "/openapi.json"})
# The web console's files (functions.console): a page and scripts, no data. The browser then
# calls the API with its key like any client.
PUBLIC_PREFIX = "/ui"
# Paths whose handler authenticates the caller itself, because who may call depends on the body:
# the embedded broker's ingress takes harness tokens as well as API keys (functions.broker.ingress).
SELF_AUTHENTICATED_PATHS = frozenset({"/v1/broker"})
# A session's meter charges its budget with the session's charge token, not an API key
# (functions.budgets_api).
_CHARGES_PATH = re.compile(r"/v1/sessions/[^/]+/charges")


def is_self_authenticated(path: str) -> bool:
    return path in SELF_AUTHENTICATED_PATHS or _CHARGES_PATH.fullmatch(path) is not None


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path == PUBLIC_PREFIX or path.startswith(PUBLIC_PREFIX + "/")


class ApiError(FunctionsError):
    """An error a handler raises on purpose, with its HTTP status and stable code given here
    (a 503 is retryable: the same request may succeed later)."""

    def __init__(self, status: int, code: str, message: str, /, **details: Any) -> None:
        super().__init__(message, **details)
        self.status = status
        self.code = code
        self.retryable = status == 503


def error_response(status: int, code: str, message: str, /, **details: Any) -> JSONResponse:
    """The JSON error body (`eventing.errors.ErrorBody`) with `status`."""
    return JSONResponse(ErrorBody.of(code, message, details).to_json(), status_code=status)


def to_response(exc: Exception) -> JSONResponse:
    """Any exception as an error response; unknown ones are logged and become a bare 500."""
    if isinstance(exc, VwmError):
        # ApiError, InputError, every FunctionsError: each states its own status and code.
        if exc.status == 500:  # not the caller's doing nor a dependency's: worth a traceback
            logger.error("internal error: %s", exc.code, exc_info=exc)
        return error_response(exc.status, exc.code, exc.message, **exc.details)
    if isinstance(exc, ValidationError):
        problems = [
            {"field": ".".join(str(p) for p in err["loc"]), "problem": err["msg"]}
            for err in exc.errors(include_url=False, include_input=False)
        ]
        return error_response(422, "invalid_request", "the request is not valid", errors=problems)
    if isinstance(exc, HTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        response = error_response(exc.status_code, code, str(exc.detail))
        response.headers.update(exc.headers or {})  # e.g. Allow on a 405
        return response
    logger.exception("unhandled error", exc_info=exc)
    return error_response(500, "internal", "the control plane failed; see its log for details")


async def handle_error(_: Request, exc: Exception) -> JSONResponse:
    return to_response(exc)


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and len(declared) < 19 and int(declared) > limit:
        raise ApiError(413, "payload_too_large", f"the request body is over {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, "payload_too_large", f"the request body is over {limit} bytes")
    return bytes(body)


async def parse_body(request: Request, model: type[Model], limit: int) -> Model:
    """A JSON object body (see `eventing.inputs`: 415 for another media type, 400 `invalid_json`
    for one that is empty, not UTF-8, too deep, ...) validated by `model` (422)."""
    check_json_content_type(request.headers.get("content-type"))
    raw = await read_body(request, limit)
    load_json_object(raw)
    # Strict in JSON mode: JSON types as declared (no 0 for false), objects for nested models.
    return model.model_validate_json(raw, strict=True)


def parse_query(request: Request, model: type[Model]) -> Model:
    """Query parameters validated by `model`; integers in plain ASCII digits (pydantic alone
    would take '+5', ' 5' and '5_0'), else 400 `invalid_parameter`."""
    values = dict(request.query_params)
    for name, field in model.model_fields.items():
        if name in values and field.annotation is int:
            ascii_uint(values[name], name)
    return model.model_validate(values)


# The scope of a live API key presented in full, or None for a missing, wrong or revoked key.
KeyLookup = Callable[[str], Awaitable[str | None]]


# Events change any job's or session's state as its harness would: not a client's to send.
ADMIN_ONLY_PATHS = frozenset({"/v1/events"})


def scope_allows(scope: str, path: str) -> bool:
    """`admin` reaches everything; `client` everything but the admin API and `/v1/events`."""
    return scope == "admin" or not (path.startswith("/v1/admin") or path in ADMIN_ONLY_PATHS)


# The two 401s say different things: what to send when nothing was, and that a key sent is not
# one of ours (never echoing it: it may be a real secret pasted into the wrong place).
NO_KEY = (
    "no API key: send one as 'Authorization: Bearer vwm_…' (the vwm command and the SDK read it "
    "from VWM_API_KEY)"
)
UNKNOWN_KEY = "this API key is not known here: it was revoked, or it is mistyped"


class ApiKeyAuth:
    """Pure ASGI middleware (streaming-safe). Puts the caller's scope in `scope["state"]`."""

    def __init__(self, app: ASGIApp, lookup: KeyLookup) -> None:
        self.app = app
        self._lookup = lookup

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path")
        if scope["type"] != "http" or is_public(path or "") or is_self_authenticated(path or ""):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        scheme, _, presented = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        try:
            key_scope = (
                await self._lookup(presented.strip()) if scheme.lower() == "bearer" else None
            )
        except DBAPIError:
            # No key can be checked while the database is down: a retry may succeed (a broker
            # retries 503 as it does 500, but this one says why and what to do).
            logger.warning("API key lookup failed: the database did not answer")
            response = error_response(
                503, "database_unavailable", "the database did not answer; try again shortly"
            )
            await response(scope, receive, send)
            return
        if key_scope is None:
            sent = scheme.lower() == "bearer" and presented.strip()
            response = error_response(401, "unauthorized", UNKNOWN_KEY if sent else NO_KEY)
            await response(scope, receive, send)
            return
        if not scope_allows(key_scope, scope["path"]):
            response = error_response(403, "forbidden", "this API key's scope is not 'admin'")
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["key_scope"] = key_scope
        await self.app(scope, receive, send)


class InputGuard:
    """Pure ASGI middleware, inside `ErrorBoundary`: a URL path of printable ASCII only, each
    query parameter once, bounded and without control characters (the file `path` excepted: the
    harness's path policy judges it). Checked before any handler reads them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            check_path(scope["path"])
            check_query(Request(scope).query_params.multi_items(), free_text=("path",))
        await self.app(scope, receive, send)


class ErrorBoundary:
    """Innermost middleware: any exception a handler lets out becomes an error response (a known
    error with its status and code, anything else a logged 500), unless the response had already
    started (a stream), in which case the connection is closed."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if started:
                raise
            await to_response(exc)(scope, receive, send)
