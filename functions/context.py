"""What every function needs, reached from wherever it is needed: settings, the database, the
runtime backend, the harness token key and connection pool.

They live on the `functions.services.Services` of the app serving the request, built once in its
lifespan (`functions.api.build_app`), never in this module: these accessors read the `Services`
bound to the current request or task (a context variable) and raise `ServicesNotBound`, saying
what to do, where none is (a script calling them outside an app should build a `Services` and
bind it, or use its methods).

Handlers call `db(fn, ...)`: the synchronous SQLAlchemy unit of work runs in a worker thread (pg8000
has no asyncio driver), inside one transaction that commits when `fn` returns; `read(fn, ...)`
when `fn` only reads, so that on SQLite it runs beside the writers instead of after them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy.orm import Session

from functions.services import Services, ServicesNotBound, bound, current
from functions.settings import ControlPlaneSettings

if TYPE_CHECKING:
    import httpx

    from functions.blobs import BlobStore
    from functions.runtime.base import RuntimeBackend
    from functions.runtime.tokens import TokenKey

__all__ = [
    "Services",
    "ServicesNotBound",
    "backend",
    "blobs",
    "bound",
    "db",
    "harness_http",
    "lookup_key",
    "read",
    "services",
    "settings",
    "token_key",
]

T = TypeVar("T")


def services() -> Services:
    """The `Services` of the app serving this request (or that started this task)."""
    return current()


def settings() -> ControlPlaneSettings:
    return current().settings


async def db(fn: Callable[..., T], *args: Any) -> T:
    return await current().db(fn, *args)


async def read(fn: Callable[..., T], *args: Any) -> T:
    """`db` for an `fn` that only reads (`Services.read`)."""
    return await current().read(fn, *args)


def token_key() -> TokenKey:
    """What harness tokens are derived from: `VWM_TOKEN_KEY_FILE`, else the data folder's key."""
    return current().token_key


def backend() -> RuntimeBackend:
    return current().backend


def blobs() -> BlobStore:
    """The blob store skill packages are kept in."""
    return current().blobs


def harness_http() -> httpx.AsyncClient:
    """The connection pool every harness call of this app goes through."""
    return current().harness_http


async def lookup_key(presented: str) -> str | None:
    """The scope of the live key `presented`, or None. Read-only (every request asks), with the
    once-a-minute note of its use written apart when due; a key found live is remembered for a
    few seconds (`functions.recent_keys`)."""
    if not presented:
        return None
    recent = current().recent_keys
    if (scope := recent.scope(presented)) is not None:
        return scope

    def find(session: Session) -> tuple[str, str, bool] | None:
        from functions.db.api_keys import ApiKeys, due_for_touch

        key = ApiKeys(session).authenticate(presented)
        return (str(key.scope), key.id, due_for_touch(key)) if key is not None else None

    found = await read(find)
    if found is None:
        return None
    scope, key_id, due = found
    recent.remember(presented, scope)
    if due:
        from functions.db.api_keys import ApiKeys

        await db(lambda session: ApiKeys(session).touch(key_id))
    return scope
