"""The PostgreSQL engine's economies (functions/db/postgres.py) keep their promises: the pool
keeps the connections a burst opened, a connection that sat idle is pinged and replaced if the
server dropped it (a busy one is not pinged: its breakage fails one unit of work, then the pool
reconnects), and rows added together go in one INSERT."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest
from sqlalchemy import Engine, create_engine, event, exc, text

from functions.db import postgres
from functions.db.engine import make_engine, session_factory, transaction
from functions.db.migrate import upgrade
from functions.db.models import SystemSetting
from tests.db.conftest import PG_SERVER_URL, NewDatabase


@pytest.fixture(scope="module")
def pg_url(new_database: NewDatabase) -> str:
    url = new_database("postgresql")
    upgrade(url)
    return url


@pytest.fixture
def engine(pg_url: str) -> Iterator[Engine]:
    engine = make_engine(pg_url)
    yield engine
    engine.dispose()


def _backend_pid(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _terminate(pid: int) -> None:
    """Have the server drop a connection, and wait until it has (the signal is asynchronous)."""
    server = create_engine(PG_SERVER_URL, isolation_level="AUTOCOMMIT")
    try:
        with server.connect() as connection:
            # Its timeout (ms) makes it wait for the backend to exit.
            connection.execute(text("SELECT pg_terminate_backend(:pid, 10000)"), {"pid": pid})
    finally:
        server.dispose()


def test_the_pool_keeps_the_connections_a_burst_opened(engine: Engine) -> None:
    burst = 15  # more than the 10 a pool with overflow kept, fewer than the pool's 40
    all_in = threading.Barrier(burst)

    def hold_one(_: int) -> None:
        with engine.connect():
            all_in.wait(10)

    with ThreadPoolExecutor(burst) as pool:
        list(pool.map(hold_one, range(burst)))

    assert engine.pool.checkedin() == burst  # type: ignore[attr-defined]


def test_an_idle_connection_the_server_dropped_is_replaced_before_use(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    dropped = _backend_pid(engine)
    _terminate(dropped)
    monkeypatch.setattr(postgres, "PING_AFTER_IDLE_S", 0.0)  # the pooled one counts as idle

    assert _backend_pid(engine) != dropped


def test_a_recently_used_connection_is_not_pinged_and_the_pool_recovers(
    engine: Engine,
) -> None:
    _terminate(_backend_pid(engine))

    # No ping: the unit of work that meets the dropped connection fails...
    with pytest.raises(exc.DBAPIError) as failed:
        _backend_pid(engine)
    assert failed.value.connection_invalidated
    # ...and the next one gets a new connection.
    assert _backend_pid(engine) > 0


def test_rows_added_together_go_in_one_insert(engine: Engine) -> None:
    # How many rows each INSERT sent to the server carries (one each: pg8000's executemany).
    inserts: list[int] = []

    @event.listens_for(engine, "before_cursor_execute")
    def note(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if statement.startswith("INSERT"):
            inserts.append(statement.count("), (") + 1)

    factory = session_factory(engine)
    keys = [f"engine.rows.{n}" for n in range(5)]
    try:
        with transaction(factory) as db:
            db.add_all(SystemSetting(key=key, value=n) for n, key in enumerate(keys))

        assert inserts == [5]
        with transaction(factory, read_only=True) as db:
            assert [db.get(SystemSetting, key).value for key in keys] == [0, 1, 2, 3, 4]  # type: ignore[union-attr]
    finally:
        with transaction(factory) as db:
            for key in keys:
                db.delete(db.get(SystemSetting, key))


def test_connections_share_one_tls_context_and_a_refusal_is_asked_once(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The test server offers no TLS: the first connection asks and is refused, the rest ask
    for none; no connection builds a TLS context of its own (pg8000's default, ~20 ms each)."""
    import ssl

    import pg8000

    made: list[object] = []  # contexts made by pg8000 (its default) or by the engine
    real_default = ssl.create_default_context
    monkeypatch.setattr(
        ssl, "create_default_context", lambda *a, **k: made.append(1) or real_default(*a, **k)
    )
    counted_ssl = SimpleNamespace(
        **{name: getattr(ssl, name) for name in ("PROTOCOL_TLS_CLIENT", "CERT_NONE")},
        SSLContext=lambda *a, **k: made.append(1) or ssl.SSLContext(*a, **k),
    )
    monkeypatch.setattr(postgres, "ssl", counted_ssl)
    asked: list[object] = []
    real_connect = pg8000.connect

    def connect(*args: object, **kwargs: object) -> object:
        asked.append(kwargs.get("ssl_context"))
        return real_connect(*args, **kwargs)

    monkeypatch.setattr(pg8000, "connect", connect)
    monkeypatch.setattr(postgres, "_context", None)
    engine = make_engine(pg_url)
    try:
        with ThreadPoolExecutor(6) as pool:
            assert list(pool.map(lambda _: _backend_pid(engine), range(6)))
        opened = engine.pool.checkedin()
    finally:
        engine.dispose()
    assert opened >= 2
    assert len(made) == 1, "one context for the process, not one per connection"
    assert isinstance(asked[0], ssl.SSLContext)  # asked for TLS, refused...
    assert asked[1:] == [False] * (len(asked) - 1)  # ...then never asked again


class _FakeDbapi:
    """pg8000's `connect` as seen by `_OpportunisticTls`: records what it was given, and
    refuses TLS when told to."""

    class InterfaceError(Exception):
        pass

    def __init__(self, offers_tls: bool) -> None:
        self.offers_tls = offers_tls
        self.given: list[object] = []

    def connect(self, **kwargs: object) -> str:
        self.given.append(kwargs.get("ssl_context", "absent"))
        if kwargs.get("ssl_context") not in (None, False, "absent") and not self.offers_tls:
            raise self.InterfaceError("Server refuses SSL")
        return "connection"


class _FakeDialect:
    def __init__(self, dbapi: _FakeDbapi) -> None:
        self.loaded_dbapi = dbapi


def test_a_server_offering_tls_gets_it_on_every_connection_with_the_shared_context() -> None:
    dbapi = _FakeDbapi(offers_tls=True)
    tls = postgres._OpportunisticTls()
    for _ in range(3):
        assert tls.connect(_FakeDialect(dbapi), None, (), {"user": "u"}) == "connection"
    assert dbapi.given == [postgres._shared_tls_context()] * 3
    assert dbapi.given[0].verify_mode.name == "CERT_NONE"  # as pg8000's own default


def test_a_callers_own_tls_choice_is_left_to_sqlalchemy() -> None:
    dbapi = _FakeDbapi(offers_tls=False)
    tls = postgres._OpportunisticTls()
    assert tls.connect(_FakeDialect(dbapi), None, (), {"ssl_context": False}) is None
    assert dbapi.given == []


def test_another_connect_error_is_raised_not_taken_for_a_refusal() -> None:
    class Broken(_FakeDbapi):
        def connect(self, **kwargs: object) -> str:
            raise self.InterfaceError("Can't create a connection to host db")

    tls = postgres._OpportunisticTls()
    with pytest.raises(_FakeDbapi.InterfaceError, match="Can't create"):
        tls.connect(_FakeDialect(Broken(offers_tls=True)), None, (), {})
    assert tls.refused is None  # nothing learned: the next connection asks again


def test_the_shared_context_speaks_tls_to_any_certificate_and_loads_no_ca_bundle() -> None:
    """As pg8000's own default: the server's certificate (here one no public CA signed) is not
    checked, so the system's CA bundle, which pg8000's context loads at every connection, is
    not loaded at all (about 20 ms of a function's cold start)."""
    import socket
    import ssl

    import trustme

    authority = trustme.CA()
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    authority.issue_cert("db.internal").configure_cert(server_context)
    context = postgres._shared_tls_context()
    assert context.cert_store_stats()["x509_ca"] == 0
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[str | None] = []

    def serve() -> None:
        connection, _ = listener.accept()
        with server_context.wrap_socket(connection, server_side=True) as tls:
            accepted.append(tls.version())
            tls.sendall(b"ok")

    server = threading.Thread(target=serve)
    server.start()
    try:
        with (
            socket.create_connection(listener.getsockname()) as raw,
            context.wrap_socket(raw) as tls,
        ):
            assert tls.recv(2) == b"ok"
            assert tls.version() is not None
    finally:
        server.join(5)
        listener.close()
    assert accepted and accepted[0] is not None
