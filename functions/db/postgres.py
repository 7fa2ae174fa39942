"""The PostgreSQL engine (production), through pg8000: a pure-Python driver, so every round trip
and every new connection costs the control plane's own CPU. Hence:

- a fixed pool, as large as the worker threads that use it (`POSTGRES_POOL`), filled on demand
  and kept: a burst queues in the database, not for a connection, and does not open and close
  connections as it goes (each one costs pg8000 a new SSL context, a TLS handshake when the
  server offers it, and the authentication exchange). Last in, first out: a quiet process keeps
  reusing the same few connections, and the rest stay idle;
- a connection is pinged before use only when it sat idle in the pool for `PING_AFTER_IDLE_S`
  (`_ping_if_idle`): that is when it can have gone stale (a scale-to-zero function slept, a
  proxy or the server dropped it), and a busy process pays no round trip per unit of work. A
  connection that breaks while in use (the server restarted mid-burst) fails that unit of work;
  SQLAlchemy then invalidates the whole pool, so the next ones reconnect;
- rows added together go in one multi-row INSERT, not one round trip per row (pg8000's
  `executemany` runs the statement once per row);
- one TLS context for every connection of the process (`_OpportunisticTls`): pg8000 builds
  one per connection otherwise, loading the system's CA bundle each time (about 20 ms of CPU;
  a tenth of the control plane's samples while a burst filled the pool). It behaves as the
  context pg8000 would have built (TLS when the server offers it, unverified, plain otherwise)
  and loads no CA bundle, which a context that verifies nothing never reads;
- CHECK, FOREIGN KEY and NOT NULL violations raise IntegrityError, as on SQLite.
"""

from __future__ import annotations

import ssl
import threading
import time
from typing import Any

from sqlalchemy import URL, Engine, create_engine, event, exc
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

# One connection for each worker thread that runs units of work (`functions.services`: 24
# readers and 16 writers), so none waits for a connection.
POSTGRES_POOL: dict[str, Any] = {"pool_size": 40, "max_overflow": 0, "pool_use_lifo": True}
# Longer than a busy process leaves a connection unused, far shorter than anything that drops
# idle connections (scale to zero, proxies' and servers' idle timeouts: minutes).
PING_AFTER_IDLE_S = 10.0
# Where a pooled connection's record keeps the monotonic time it was last returned to the pool.
_RETURNED_AT = "vwm_returned_at"


def postgres_engine(url: URL, **kwargs: Any) -> Engine:
    """An engine on `url` (pg8000); `kwargs` go to `create_engine` over `POSTGRES_POOL`. A
    caller's own ``connect_args={"ssl_context": ...}`` is kept."""
    tls = _OpportunisticTls()
    engine = create_engine(url, **{**POSTGRES_POOL, **kwargs})
    engine.dialect.use_insertmanyvalues_wo_returning = True
    event.listen(engine, "do_connect", tls.connect)
    event.listen(engine, "checkin", _note_return)
    event.listen(engine, "checkout", _ping_if_idle)
    event.listen(engine, "handle_error", _integrity_errors_as_such)
    return engine


class _OpportunisticTls:
    """Connects as pg8000 does by default (TLS when the server offers it, unverified; plain
    when it does not), with one TLS context for the process instead of one per connection.
    pg8000 given a context requires TLS, so the first connection finds out whether the server
    offers it (the connections of a burst wait for that one) and the rest ask accordingly."""

    def __init__(self) -> None:
        self.refused: bool | None = None  # not known until a first connection is made
        self._deciding = threading.Lock()

    def connect(
        self, dialect: Any, _record: Any, cargs: tuple[Any, ...], cparams: dict[str, Any]
    ) -> Any:
        if "ssl_context" in cparams:
            return None  # the caller's own choice: SQLAlchemy connects as usual
        if self.refused is None:
            with self._deciding:
                if self.refused is None:
                    return self._first(dialect, cargs, cparams)
        context = False if self.refused else _shared_tls_context()
        return dialect.loaded_dbapi.connect(*cargs, **cparams, ssl_context=context)

    def _first(self, dialect: Any, cargs: tuple[Any, ...], cparams: dict[str, Any]) -> Any:
        dbapi = dialect.loaded_dbapi
        try:
            connection = dbapi.connect(*cargs, **cparams, ssl_context=_shared_tls_context())
        except dbapi.InterfaceError as error:
            if "refuses SSL" not in str(error):
                raise  # unreachable, or refused us: nothing learned about TLS
            self.refused = True
            return dbapi.connect(*cargs, **cparams, ssl_context=False)
        self.refused = False
        return connection


# The process's one context for every engine, made at the first connection.
_context: ssl.SSLContext | None = None
_context_lock = threading.Lock()


def _shared_tls_context() -> ssl.SSLContext:
    """What pg8000 makes for every connection (`pg8000.core._make_socket`: no certificate or
    host name checked), made once (under a lock: the connections of a burst are opened by many
    threads at once). Without the CA bundle pg8000's `ssl.create_default_context()` loads, which
    a context that verifies nothing never reads: 20 ms or more of every cold start's CPU."""
    global _context
    with _context_lock:
        if _context is None:
            _context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            _context.check_hostname = False
            _context.verify_mode = ssl.CERT_NONE
        return _context


def _note_return(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    record.info[_RETURNED_AT] = time.monotonic()


def _ping_if_idle(
    dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: PoolProxiedConnection
) -> None:
    """Ping a connection that sat idle long enough to have gone stale; a failed ping makes the
    pool replace it (DisconnectionError: the pool reconnects and checks out again). A new
    connection has no return time and needs none."""
    returned_at = record.info.get(_RETURNED_AT)
    if returned_at is None or time.monotonic() - returned_at < PING_AFTER_IDLE_S:
        return
    try:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("SELECT 1")
        finally:
            cursor.close()
    except Exception as error:
        raise exc.DisconnectionError(f"stale pooled connection: {error}") from error


def _integrity_errors_as_such(context: ExceptionContext) -> BaseException | None:
    """pg8000 raises IntegrityError only for unique violations; CHECK, FOREIGN KEY and NOT NULL
    violations (SQLSTATE class 23) arrive as ProgrammingError. Make them all IntegrityError, as
    they are on SQLite, so callers handle one exception on both backends."""
    if isinstance(context.sqlalchemy_exception, exc.IntegrityError):
        return None
    original = context.original_exception
    detail = original.args[0] if original.args else None
    if isinstance(detail, dict) and str(detail.get("C", "")).startswith("23"):
        return exc.IntegrityError(context.statement, context.parameters, original)
    return None
