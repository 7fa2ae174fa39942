"""The HTTP edge of the harness: auth, body limits, and errors as JSON with a stable code.

Inner modules raise `harness.errors.HarnessError`s; only this module turns anything into a
response. A caller never sees a traceback: an unexpected exception becomes a 500 with code
``internal`` and is logged here.
"""

from __future__ import annotations

import hmac
import json
import logging
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from harness.errors import BadRequest, HarnessError, PayloadTooLarge

logger = logging.getLogger(__name__)

Model = TypeVar("Model", bound=BaseModel)

# Paths anyone may call: load balancers and the control plane's readiness probe.
PUBLIC_PATHS = frozenset({"/healthz"})


def error_response(status: int, code: str, message: str, **details: Any) -> JSONResponse:
    body: dict[str, Any] = {"error": {"code": code, "message": message}}
    if details:
        body["error"]["details"] = details
    return JSONResponse(body, status_code=status)


async def harness_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HarnessError)
    return JSONResponse({"error": exc.to_dict()}, status_code=exc.status_code)


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


async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error", extra={"path": request.url.path})
    return error_response(500, "internal", "the harness failed; see its log for details")


EXCEPTION_HANDLERS = {
    HarnessError: harness_error,
    HTTPException: http_error,
    ValidationError: validation_error,
    Exception: unexpected_error,
}


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
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
    raw = await read_body(request, limit)
    try:
        data = json.loads(raw or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest("the request body must be a JSON object")
    # Strict in JSON mode: JSON types as declared (no 0 for false), objects for nested models.
    return model.model_validate_json(raw, strict=True)


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
