"""What a function's handlers need, built once per app in its lifespan: `Services`.

A function holds no state of its own in module globals. What one replica knows, another can
learn from the database or the harness; what a process does need (settings, the database
engine, the runtime backend, the harness connection pool, per-session relaunch locks, the
background tasks a request leaves running) lives on one `Services` object that the app's
lifespan builds and closes (`functions.api.build_app`). Two apps in one process (tests) each
have their own, so nothing one of them does is seen by the other except through its database.

Handlers reach it as ``request.state.services``; the code they call reaches it through the
accessors of `functions.context` (`db`, `settings`, `backend`, `token_key`, `harness_http`),
which read the context variable `bound` sets: `build_app`'s middleware binds it for each request
and its lifespan for the tasks started there (contextvars are copied when a task is created).

A function scales to zero, so a cold start pays for every import and every connection made
before the first answer: `Services.build` only reads the settings; the engine, token key,
backend (it probes bubblewrap) and HTTP pool are made on first use.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.to_thread

from functions.errors import FunctionsError
from functions.recent_keys import RecentKeys
from functions.settings import ControlPlaneSettings

if TYPE_CHECKING:
    import httpx
    from sqlalchemy import Engine
    from sqlalchemy.orm import sessionmaker

    from functions.blobs import BlobStore
    from functions.outbox_relay import OutboxRelay
    from functions.runtime.base import RuntimeBackend
    from functions.runtime.tokens import TokenKey

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Worker threads for units of work (`Services._threads`). Together they stay within
# PostgreSQL's pool (`functions.db.postgres.POSTGRES_POOL`, 40 connections), so no thread waits
# for a connection; on SQLite one writer writes at a time, so a few threads hold the queue.
READ_THREADS = 24
POSTGRES_WRITE_THREADS = 16
SQLITE_WRITE_THREADS = 4

# Which `Services` the running request or task belongs to. A context variable, not state: each
# request and task sees the value bound where it started, never another app's.
_CURRENT: contextvars.ContextVar[Services | None] = contextvars.ContextVar(
    "vwm_services", default=None
)


class ServicesNotBound(FunctionsError, RuntimeError):
    """An accessor of `functions.context` was called where no app's `Services` is bound."""

    code = "services_not_bound"


class ServicesClosed(FunctionsError, RuntimeError):
    """Background work was started on `Services` that are closing (the app is shutting down)."""

    code = "services_closed"
    status = 503  # another replica, or this one restarted, can take the request
    retryable = True


def current() -> Services:
    """The `Services` bound to this request or task; `ServicesNotBound` if none is."""
    services = _CURRENT.get()
    if services is None:
        raise ServicesNotBound(
            "no control-plane services are bound here: this code runs inside an app built by "
            "functions.api.build_app (its middleware and lifespan bind them); outside one, build "
            "a functions.services.Services and call it inside `with bound(services):`, or use "
            "its methods directly"
        )
    return services


@contextlib.contextmanager
def bound(services: Services) -> Iterator[Services]:
    """Bind `services` for the code (and the tasks it creates) inside the block."""
    token = _CURRENT.set(services)
    try:
        yield services
    finally:
        _CURRENT.reset(token)


class KeyedLocks:
    """One `asyncio.Lock` per key, dropped once nobody holds or waits for it (so the map stays
    as small as the work in flight, not as large as every session ever seen)."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key) or (asyncio.Lock(), 0)
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)


class Services:
    """Everything one app's handlers share. ``Services.build(settings)`` (cheap: the rest is
    made on first use), then ``await services.aclose()`` once at shutdown.

    - `settings`: the `ControlPlaneSettings` it was built with (fixed for its lifetime);
    - `engine`, `session_factory`, `db(fn, *args)`: the database;
    - `token_key`: what harness tokens are derived from;
    - `backend`: the runtime backend (`LocalBackend`, or `KnativeBackend` in production);
    - `harness_http`: the `httpx.AsyncClient` every harness call goes through;
    - `relaunch_locks`: one harness relaunch at a time per session (`KeyedLocks`);
    - `recent_keys`: the API keys authenticated in the last seconds (`RecentKeys`);
    - `spawn(coroutine)`: background work that outlives its request (a `wait: false` session
      start), cancelled and awaited by `aclose`.
    """

    def __init__(self, settings: ControlPlaneSettings) -> None:
        self.settings = settings
        self.relaunch_locks = KeyedLocks()
        self.recent_keys = RecentKeys()  # API keys found live a moment ago (`lookup_key`)
        # The lazy parts: made at most once, whichever thread asks first (`db`'s units of work
        # run in worker threads).
        self._build_lock = threading.Lock()
        self._engine: Engine | None = None
        self._session_factory: sessionmaker[Any] | None = None
        self._token_key: TokenKey | None = None
        self._backend: RuntimeBackend | None = None
        self._harness_http: httpx.AsyncClient | None = None
        self._blobs: BlobStore | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._limiters: tuple[asyncio.AbstractEventLoop, Any, Any] | None = None
        self._closing = False
        # The app's outbox relay while its lifespan runs one (`functions.outbox_relay`): the
        # events function's tick drains through it. None: nothing relays here.
        self.outbox_relay: OutboxRelay | None = None

    @classmethod
    def build(cls, settings: ControlPlaneSettings | None = None) -> Services:
        """Services over `settings` (by default read from the environment now)."""
        return cls(settings if settings is not None else ControlPlaneSettings.from_env())

    def __repr__(self) -> str:
        return f"Services(data_dir={str(self.settings.data_dir)!r})"

    # -- the database ---------------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            with self._build_lock:
                if self._engine is None:
                    from functions.db.engine import make_engine
                    from functions.private_files import private_dir

                    if self._on_sqlite():
                        private_dir(self.settings.data_dir)
                    self._engine = make_engine(self.settings.database_url)
        return self._engine

    @property
    def session_factory(self) -> sessionmaker[Any]:
        if self._session_factory is None:
            engine = self.engine
            with self._build_lock:
                if self._session_factory is None:
                    from functions.db.engine import session_factory

                    self._session_factory = session_factory(engine)
        return self._session_factory

    async def db(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(session, *args)`` in a worker thread (pg8000 has no asyncio driver), inside one
        transaction that commits when `fn` returns. `fn` sees these services bound, whoever
        calls (the broker's loop calls this directly)."""
        return await self._unit_of_work(fn, args, read_only=False)

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """As `db`, for an `fn` that only reads: on SQLite it neither waits for a writer nor
        holds one up (`functions.db.engine.transaction`); a write in it is refused."""
        return await self._unit_of_work(fn, args, read_only=True)

    async def _unit_of_work(
        self, fn: Callable[..., T], args: tuple[Any, ...], read_only: bool
    ) -> T:
        factory = self.session_factory

        def unit_of_work() -> T:
            from functions.db.engine import transaction

            with bound(self), transaction(factory, read_only=read_only) as session:
                return fn(session, *args)

        return await anyio.to_thread.run_sync(unit_of_work, limiter=self._threads(read_only))

    def _threads(self, read_only: bool) -> anyio.CapacityLimiter:
        """The worker threads units of work run in: readers and writers apart. On SQLite the
        writers take turns anyway, and while they all shared anyio's default 40 threads, a burst
        of writers waiting for their turn held every thread, and the lightest read (a
        ``GET /v1/sessions/{id}``) queued behind them for seconds. Made per event loop (a
        limiter belongs to the loop it was made in)."""
        loop = asyncio.get_running_loop()
        if self._limiters is None or self._limiters[0] is not loop:
            writers = SQLITE_WRITE_THREADS if self._on_sqlite() else POSTGRES_WRITE_THREADS
            self._limiters = (
                loop,
                anyio.CapacityLimiter(READ_THREADS),
                anyio.CapacityLimiter(writers),
            )
        return self._limiters[1] if read_only else self._limiters[2]

    def _on_sqlite(self) -> bool:
        return self.settings.database_url.startswith("sqlite")

    # -- the runtime ----------------------------------------------------------------------------

    @property
    def token_key(self) -> TokenKey:
        """`VWM_TOKEN_KEY_FILE`, else the data folder's key (made on first use).
        Raises `TokenKeyUnavailable` when it cannot be read or made."""
        if self._token_key is None:
            with self._build_lock:
                if self._token_key is None:
                    from functions.runtime.tokens import TokenKey

                    key_file = self.settings.token_key_file
                    self._token_key = (
                        TokenKey.from_file(key_file)
                        if key_file is not None
                        else TokenKey.in_folder(self.settings.data_dir)
                    )
        return self._token_key

    @property
    def blobs(self) -> BlobStore:
        """Where skill packages are kept (``VWM_BLOB_STORE``): made on first use, so a
        function that never touches a skill never loads a storage client."""
        if self._blobs is None:
            from functions.blobs import open_blob_store

            with self._build_lock:
                if self._blobs is None:
                    self._blobs = open_blob_store(self.settings.blobs)
        return self._blobs

    @property
    def backend(self) -> RuntimeBackend:
        """The runtime backend of ``VWM_RUNTIME_BACKEND``; bubblewrap is probed when the local
        one is first made."""
        if self._backend is None:
            token_key = self.token_key
            with self._build_lock:
                if self._backend is None:
                    self._backend = (
                        self._knative_backend(token_key)
                        if self.settings.runtime_backend == "knative"
                        else self._local_backend(token_key)
                    )
        return self._backend

    def _local_backend(self, token_key: TokenKey) -> RuntimeBackend:
        from functions.runtime.local import LocalBackend
        from functions.runtime.sandbox import choose

        current = self.settings
        return LocalBackend(
            current.data_dir,
            token_key=token_key,
            startup_grace_s=current.harness.startup_grace_s,
            # The CLIs never see the token key file either.
            sandbox=choose(current.sandbox, current.sandbox_bwrap, show=current.sandbox_show),
            sandbox_hide=[current.token_key_file] if current.token_key_file else [],
            warm_harnesses=current.warm_harnesses,
        )

    def _knative_backend(self, token_key: TokenKey) -> RuntimeBackend:
        from functions.kube import KubeApi
        from functions.runtime.knative import KnativeBackend

        current = self.settings
        return KnativeBackend(
            KubeApi.from_environment(),
            namespace=current.knative_namespace,
            broker=current.knative_broker,
            sessions=current.knative_sessions,
            token_key=token_key,
            # A Ready Service scaled to zero wakes a new pod (scheduled, its volume attached)
            # before it answers: as long as a start may take, not a mute harness until then.
            startup_grace_s=max(current.harness.startup_grace_s, current.harness_ready_timeout_s),
            warm_services=current.warm_harnesses,
        )

    @property
    def harness_http(self) -> httpx.AsyncClient:
        """One client for every harness call, with a connection pool per harness: building an
        httpx client costs milliseconds of CPU (TLS context), too much to pay on every call of
        every prompt. Its default timeouts are never used: every call passes its own bounds."""
        if self._closing:  # closed at shutdown; a call now would fail obscurely
            raise ServicesClosed("the control plane is shutting down; try again")
        if self._harness_http is None:
            import httpx

            from eventing.tls import verified_context
            from functions.origin_pools import PoolPerOrigin

            def one_harness_pool() -> httpx.AsyncHTTPTransport:
                return httpx.AsyncHTTPTransport(
                    verify=verified_context(),
                    trust_env=False,  # the harness is local or in-cluster, never behind a proxy
                    # Idle connections dropped well before a harness drops them (its 15 s,
                    # `harness.serve.KEEP_ALIVE_S`), so none is reused as the harness closes it.
                    limits=httpx.Limits(
                        max_connections=None, max_keepalive_connections=8, keepalive_expiry=4.0
                    ),
                )

            self._harness_http = httpx.AsyncClient(
                timeout=httpx.Timeout(30.0),
                # A pool per harness: one pool for all walks every harness's connections at
                # each call (functions.origin_pools).
                transport=PoolPerOrigin(one_harness_pool),
                trust_env=False,
            )
            _traced(self._harness_http)
        return self._harness_http

    # -- background work ------------------------------------------------------------------------

    def spawn(
        self, coroutine: Coroutine[Any, Any, T], *, name: str | None = None
    ) -> asyncio.Task[T]:
        """Run `coroutine` as a task that outlives the request that starts it, with these
        services bound, until it ends or `aclose` cancels it. Its failure is logged (the work
        records its own outcome; nobody awaits the task)."""
        if self._closing:
            coroutine.close()
            raise ServicesClosed("the control plane is shutting down; try again")
        context = contextvars.copy_context()
        context.run(_CURRENT.set, self)
        task = asyncio.get_running_loop().create_task(coroutine, name=name, context=context)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    @property
    def background(self) -> frozenset[asyncio.Task[Any]]:
        """The background tasks still running."""
        return frozenset(self._tasks)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.error("background work failed", exc_info=exc, extra={"task": task.get_name()})

    # -- shutdown -------------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Cancel and await the background tasks, close the HTTP pool, dispose the engine.
        Idempotent. What a cancelled task left half-done (a session still `provisioning`) is
        the reconciler's to finish, as after a crash."""
        self._closing = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._harness_http is not None:
            await self._harness_http.aclose()
        from functions.runtime.base import WarmPooling

        if isinstance(self._backend, WarmPooling):  # its unclaimed warm harnesses
            await asyncio.to_thread(self._backend.close)
        if self._engine is not None:
            self._engine.dispose()


def _traced(client: httpx.AsyncClient) -> None:
    """While tracing is on (`eventing.tracing`), a CLIENT span per call of `client` and the W3C
    ``traceparent`` on its requests, so each harness's server span joins the caller's trace
    (opentelemetry-instrumentation-httpx). Off: the client is left as it is."""
    from eventing import tracing

    chosen = tracing.provider()
    if chosen is None:
        return
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    HTTPXClientInstrumentor.instrument_client(client, tracer_provider=chosen)
