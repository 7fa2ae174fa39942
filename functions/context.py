"""What every function needs, built once per process on first use: settings, the database, the
runtime backend. Built lazily because a scale-to-zero function pays for work done at import.

Handlers call `db(fn, ...)`: the synchronous SQLAlchemy unit of work runs in a worker thread (pg8000
has no asyncio driver), inside one transaction that commits when `fn` returns.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import anyio.to_thread
from sqlalchemy.orm import Session
from starlette.responses import JSONResponse

from functions.http import error_response, register_error_mapper
from functions.private_files import private_dir
from functions.settings import ControlPlaneSettings

T = TypeVar("T")


@functools.cache
def settings() -> ControlPlaneSettings:
    return ControlPlaneSettings.from_env()


@functools.cache
def _factory() -> Any:
    from functions.db.engine import make_engine, session_factory

    current = settings()
    if current.database_url.startswith("sqlite"):
        private_dir(current.data_dir)
    return session_factory(make_engine(current.database_url))


async def db(fn: Callable[..., T], *args: Any) -> T:
    def unit_of_work() -> T:
        from functions.db.engine import transaction

        with transaction(_factory()) as session:
            return fn(session, *args)

    return await anyio.to_thread.run_sync(unit_of_work)


@functools.cache
def token_key() -> Any:
    """What harness tokens are derived from: `VWM_TOKEN_KEY_FILE`, else the data folder's key."""
    from functions.runtime.tokens import TokenKey

    current = settings()
    if current.token_key_file is not None:
        return TokenKey.from_file(current.token_key_file)
    return TokenKey.in_folder(current.data_dir)


@functools.cache
def backend() -> Any:
    from functions.runtime.local import LocalBackend

    current = settings()
    if current.runtime_backend != "local":
        raise RuntimeError(f"runtime backend {current.runtime_backend!r} is not available yet")
    from functions.runtime.sandbox import choose

    return LocalBackend(
        current.data_dir,
        token_key=token_key(),
        startup_grace_s=current.harness.startup_grace_s,
        # Probed once per process; the CLIs never see the token key file either.
        sandbox=choose(current.sandbox, current.sandbox_bwrap, show=current.sandbox_show),
        sandbox_hide=[current.token_key_file] if current.token_key_file else [],
    )


async def lookup_key(presented: str) -> str | None:
    if not presented:
        return None

    def find(session: Session) -> str | None:
        from functions.db.api_keys import ApiKeys

        key = ApiKeys(session).authenticate(presented)
        return str(key.scope) if key is not None else None

    return await db(find)


def _map_layer_errors(exc: Exception) -> JSONResponse | None:
    from functions.db.errors import ConflictError, DbError, InvalidCursor, NotFoundError
    from functions.harness_client import HarnessCallError
    from functions.repo_policy import RepoPolicyError
    from functions.runtime.errors import RuntimeBackendError

    if isinstance(exc, DbError):
        status = 500
        if isinstance(exc, NotFoundError):
            status = 404
        elif isinstance(exc, ConflictError):
            status = 409
        elif isinstance(exc, InvalidCursor):
            status = 400
        return error_response(status, exc.code, exc.message, **_jsonable(exc.details))
    if isinstance(exc, RepoPolicyError):  # the request names a repo (or value) we refuse
        return error_response(422, exc.code, exc.message, **_jsonable(exc.details))
    if isinstance(exc, HarnessCallError):
        return error_response(exc.status_code, exc.code, exc.message, **_jsonable(exc.details))
    if isinstance(exc, RuntimeBackendError):
        status = 503 if getattr(exc, "retryable", False) else 502
        code = getattr(exc, "code", "runtime_failed")
        return error_response(status, code, str(exc))
    return None


def _jsonable(details: dict[str, Any]) -> dict[str, Any]:
    return {
        key: value if isinstance(value, str | int | float | bool | None) else str(value)
        for key, value in details.items()
    }


register_error_mapper(_map_layer_errors)
