"""The HTTP edge of the harness: auth, body limits, and errors as JSON with a stable code.

Inner modules raise `harness.errors.HarnessError`s; only this module turns anything into a
response. A caller never sees a traceback: an unexpected exception becomes a 500 with code
``internal`` and is logged here.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from eventing.errors import ErrorBody
from eventing.inputs import (
    InputError,
    bad_parameter,
    check_json_content_type,
    check_path,
    check_query,
    load_json_object,
)
from harness.errors import HarnessError, PayloadTooLarge

logger = logging.getLogger(__name__)

Model = TypeVar("Model", bound=BaseModel)

# Paths anyone may call: load balancers and the control plane's readiness probe; a Prometheus
# scraper (it has no session token; docs/metrics.md says what the metrics reveal).
PUBLIC_PATHS = frozenset({"/healthz", "/metrics"})


def error_response(status: int, code: str, message: str, /, **details: Any) -> JSONResponse:
    """The JSON error body (`eventing.errors.ErrorBody`) with `status`."""
    return JSONResponse(ErrorBody.of(code, message, details).to_json(), status_code=status)


async def harness_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HarnessError)
    return JSONResponse(exc.to_body(), status_code=exc.status)


async def http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail))


async def validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ValidationError)
    problems = [
        {"field": ".".join(str(p) for p in err["loc"]), "problem": err["msg"]}
        for err in exc.errors(include_url=False, include_input=False)
    ]
    return error_response(422, "invalid_request", "the request body is not valid", errors=problems)


async def input_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InputError)
    return _input_response(exc)


def _input_response(exc: InputError) -> JSONResponse:
    return error_response(exc.status, exc.code, exc.message, **exc.details)


async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error", extra={"path": request.url.path})
    return error_response(500, "internal", "the harness failed; see its log for details")


EXCEPTION_HANDLERS = {
    HarnessError: harness_error,
    HTTPException: http_error,
    ValidationError: validation_error,
    InputError: input_error,
    Exception: unexpected_error,
}


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and len(declared) < 19 and int(declared) > limit:
        raise PayloadTooLarge(f"the request body is over the limit of {limit} bytes", limit=limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(
                f"the request body is over the limit of {limit} bytes", limit=limit
            )
    return bytes(body)


async def parse_json(request: Request, model: type[Model], limit: int) -> Model:
    """A JSON object body (see `eventing.inputs`: 415 for another media type, 400 `invalid_json`
    for one that is empty, not UTF-8, too deep, ...) validated by `model` (422)."""
    check_json_content_type(request.headers.get("content-type"))
    raw = await read_body(request, limit)
    load_json_object(raw)
    # Strict in JSON mode: JSON types as declared (no 0 for false), objects for nested models.
    return model.model_validate_json(raw, strict=True)


_FLAGS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


def query_flag(request: Request, name: str) -> bool:
    """A yes/no query parameter: 1/true/yes or 0/false/no (absent: no); anything else is 400."""
    raw = request.query_params.get(name, "0")
    if raw.lower() not in _FLAGS:
        raise bad_parameter(name, "character", f"{name} is one of 1, true, yes, 0, false, no")
    return _FLAGS[raw.lower()]


class InputGuard:
    """Pure ASGI middleware: a URL path of printable ASCII only, each query parameter once,
    bounded and without control characters (the file `path` excepted: the path policy judges
    it). Answers the refusal itself: it runs outside the exception handlers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            try:
                check_path(scope["path"])
                check_query(Request(scope).query_params.multi_items(), free_text=("path",))
            except InputError as refused:
                await _input_response(refused)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class TokenAuth:
    """Pure ASGI middleware (streaming-safe): every request but the public paths needs the token."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        auth = headers.get(b"authorization", b"")
        scheme, _, presented = auth.partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(presented.strip(), self._token):
            response = error_response(
                401, "unauthorized", "send the session token as 'Authorization: Bearer <token>'"
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
