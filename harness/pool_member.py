"""A warm Knative Service waiting for its session: what `python -m harness` serves when its
environment has a pool token (``VWM_POOL_TOKEN``) and no session (`functions.runtime.knative_pool`
makes such Services ahead of any session).

Until its claim it answers ``GET /healthz`` (so Knative counts its pod ready) and the claim,
``POST /v1/claim`` with the pool token: a JSON object ``{"env": {...}}``, the session's whole
harness environment (session id, token, CLI, model, credentials, ...). The claim makes it that
session's harness in place: the environment is taken as the process's, the harness app is built
and started from it exactly as ``python -m harness`` would be, and from then on every request
goes to that app. Anything else before a claim is refused with 503 ``not_claimed``.

The control plane writes the same environment into the Service's Secret before it claims, which
the pod reads when it starts: a pod that restarts (or that had scaled to zero) comes up as the
session's harness directly, and a claim then reaching it finds no claim route (answered 401 with
the pool token), which the control plane takes as "claimed already".
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import Callable, Mapping

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from eventing.harness_api import CLAIM_PATH, POOL_TOKEN_ENV, PoolClaim
from harness.errors import Conflict, HarnessError
from harness.http import EXCEPTION_HANDLERS, InputGuard, TokenAuth, parse_json
from harness.settings import HarnessSettings, SettingsError

# A session's environment is a few KiB (prices and instructions included).
MAX_CLAIM_BYTES = 1 << 20
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# What a claim must carry: without them the harness would start as no session, or with a
# token nobody knows.
_REQUIRED = ("VWM_SESSION_ID", "VWM_SESSION_TOKEN", "VWM_CLI")


def is_pool_member(env: Mapping[str, str]) -> bool:
    return bool(env.get(POOL_TOKEN_ENV)) and not env.get("VWM_SESSION_ID")


class NotClaimed(HarnessError):
    status = 503
    code = "not_claimed"


class ClaimRefused(HarnessError):
    status = 400
    code = "invalid_claim"


class ClaimFailed(HarnessError):
    status = 500
    code = "claim_failed"


class AlreadyClaimed(Conflict):
    code = "already_claimed"


class PoolMemberApp:
    """The ASGI app of a pool member: the waiting routes until the claim, the session's harness
    app (`build`, `harness.app.create_app`) after it, with that app's lifespan run in a task of
    its own from the claim to the server's shutdown."""

    def __init__(self, pool_token: str, build: Callable[[HarnessSettings], Starlette]) -> None:
        self._build = build
        self._session_app: Starlette | None = None
        self._claiming = asyncio.Lock()
        self._stop = asyncio.Event()
        self._lifespan: asyncio.Task[None] | None = None
        routes = [
            Route("/healthz", self._health, methods=["GET"]),
            Route(CLAIM_PATH, self._claim, methods=["POST"]),
        ]
        self._waiting = Starlette(
            routes=routes,
            middleware=[Middleware(TokenAuth, token=pool_token), Middleware(InputGuard)],
            exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        )
        self._waiting.add_exception_handler(404, self._not_claimed)  # type: ignore[arg-type]

    @property
    def claimed(self) -> bool:
        return self._session_app is not None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._serve_lifespan(receive, send)
        elif self._session_app is not None:
            await self._session_app(scope, receive, send)
        else:
            await self._waiting(scope, receive, send)

    async def _health(self, request: Request) -> Response:
        return JSONResponse({"status": "waiting", "pool_member": True})

    async def _not_claimed(self, request: Request, exc: Exception) -> Response:
        refusal = NotClaimed(
            "this harness is a warm pool member that no session has claimed yet; call it "
            "through its session once the control plane has claimed it"
        )
        return JSONResponse(refusal.to_body(), status_code=refusal.status)

    async def _claim(self, request: Request) -> Response:
        claim = await parse_json(request, PoolClaim, MAX_CLAIM_BYTES)
        async with self._claiming:  # two claims at once: one wins, the other is refused
            if self._session_app is not None:
                raise AlreadyClaimed("this pool member serves a session already")
            settings = _adopt(claim.env)
            started = asyncio.get_running_loop().create_future()
            try:
                app = self._build(settings)
                self._lifespan = asyncio.create_task(self._run_lifespan(app, started))
                await started
            except Exception as exc:  # the harness's own start failed: so does the claim
                raise ClaimFailed(
                    f"the session's harness did not start: {exc}; the control plane starts the "
                    "session's own Service instead, whose log tells more"
                ) from None
            self._session_app = app
        return JSONResponse({"status": "claimed", "session_id": settings.session_id})

    async def _run_lifespan(self, app: Starlette, started: asyncio.Future[None]) -> None:
        try:
            async with app.router.lifespan_context(app):
                started.set_result(None)
                await self._stop.wait()
        except BaseException as exc:
            if not started.done():
                started.set_exception(exc)
                return
            raise

    async def _serve_lifespan(self, receive: Receive, send: Send) -> None:
        """The server's lifespan: nothing to start; at shutdown, the session app's stops."""
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self._stop.set()
                if self._lifespan is not None:
                    with contextlib.suppress(Exception):
                        await self._lifespan
                await send({"type": "lifespan.shutdown.complete"})
                return


def _adopt(env: Mapping[str, str]) -> HarnessSettings:
    """The session's settings from the claim's environment, made the process's (the CLI and
    git inherit it, as they would a cold start's); on a refusal the environment is as before."""
    # (A NUL in a value never gets here: the JSON reader refuses control characters.)
    bad = sorted(name for name in env if not _NAME.fullmatch(name))
    if bad:
        raise ClaimRefused(f"the claim's environment has invalid variables: {', '.join(bad)}")
    missing = [name for name in _REQUIRED if not env.get(name)]
    if missing:
        raise ClaimRefused(f"the claim's environment lacks {', '.join(missing)}")
    before = dict(os.environ)
    os.environ.update(env)
    os.environ.pop(POOL_TOKEN_ENV, None)  # the session's token from now on, not the pool's
    try:
        return HarnessSettings.from_env()
    except SettingsError as exc:
        os.environ.clear()
        os.environ.update(before)
        raise ClaimRefused(f"the claim's environment is not a harness's: {exc}") from None


def pool_member_app(env: Mapping[str, str]) -> ASGIApp:
    from harness.app import create_app

    return PoolMemberApp(env[POOL_TOKEN_ENV], create_app)
