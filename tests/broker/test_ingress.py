"""`POST /v1/broker` as `vwm up` serves it (the real embedded control plane in a subprocess): who
may post what (harness tokens, client and admin keys), both content modes, bad events refused
with a JSON error, a re-posted event queued once, and an accepted event delivered by the broker
to the `events` function, which changes the job's state."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, func, make_url, select
from sqlalchemy.orm import Session

from eventing.codec import to_binary, to_structured
from eventing.events import (
    CONTROL_PLANE_SOURCE,
    PromptRequested,
    VwmEvent,
    harness_source,
    job_event_id,
    new_event,
)
from eventing.events import JobStarted as Started
from functions.db.engine import make_engine, session_factory, transaction
from functions.db.models import BrokerDelivery, BrokerEvent, Job
from functions.runtime.tokens import TokenKey
from tests.broker.events import OTHER_SESSION, SESSION, end_requested, job_started, tick
from tests.db import factories
from tests.support.control_plane import ControlPlane
from tests.support.postgres import PG_SERVER_URL, postgres_database

Run = Callable[..., Any]


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    data_dir = tmp_path_factory.mktemp("broker") / "data"
    plane = ControlPlane(data_dir, {"VWM_TICK_S": "0", "VWM_BROKER_POLL_S": "0.1"})
    plane.start()
    yield plane
    plane.stop()


@pytest.fixture(scope="module")
def database(plane: ControlPlane) -> Iterator[Run]:
    engine = make_engine(f"sqlite:///{plane.data_dir / 'vwm.sqlite3'}")
    factory = session_factory(engine)

    def run(fn: Callable[..., Any], *args: Any) -> Any:
        with transaction(factory) as session:
            return fn(session, *args)

    yield run
    engine.dispose()


@pytest.fixture(scope="module")
def client_key(plane: ControlPlane) -> str:
    with plane.client() as admin:
        created = admin.post("/v1/admin/keys", json={"name": "app", "scope": "client"})
    assert created.status_code == 201, created.text
    return str(created.json()["key"])


def harness_token(plane: ControlPlane, session_id: str) -> str:
    """The token the control plane derives for a session's harness (its key is in the data
    folder, as `vwm up` keeps it)."""
    return str(TokenKey.in_folder(plane.data_dir).token(session_id))


def post(
    plane: ControlPlane, event: VwmEvent, credential: str | None, *, structured: bool = False
) -> httpx.Response:
    headers, body = (to_structured if structured else to_binary)(event)
    if credential is not None:
        headers["authorization"] = f"Bearer {credential}"
    return httpx.post(f"{plane.url}/v1/broker", headers=headers, content=body, timeout=30)


def prompt_requested() -> VwmEvent:
    payload = PromptRequested(prompt="hi", requested_at=datetime.now(UTC))
    return new_event(payload, source=CONTROL_PLANE_SOURCE, session_id=SESSION)


def queued(run: Run, event: VwmEvent) -> int:
    def count(session: Session) -> int:
        found = session.scalar(
            select(func.count())
            .select_from(BrokerEvent)
            .where(BrokerEvent.source == event.source, BrokerEvent.id == event.id)
        )
        return int(found or 0)

    return int(run(count))


def assert_refused(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


def test_a_harness_token_posts_its_own_sessions_job_events_in_either_mode(plane, database):
    token = harness_token(plane, SESSION)
    binary, structured = job_started(1), job_started(2)
    assert post(plane, binary, token).status_code == 202
    assert post(plane, structured, token, structured=True).status_code == 202
    assert queued(database, binary) == queued(database, structured) == 1


def test_a_harness_token_is_refused_for_another_session_or_another_kind_of_event(plane, database):
    token = harness_token(plane, SESSION)
    # Another session's event: this token is not that session's, so it is no credential at all.
    theirs = job_started(1, session=OTHER_SESSION, job="c" * 32)
    assert_refused(post(plane, theirs, token), 401, "unauthorized")
    assert_refused(post(plane, theirs, token, structured=True), 401, "unauthorized")
    # Its own session, but not a job event, or not from its own source.
    for event in (
        end_requested(SESSION),
        new_event(
            Started(prompt="p", cli="claude", started_at=datetime.now(UTC)),
            source=harness_source(OTHER_SESSION),
            session_id=SESSION,
            job_id="d" * 32,
            seq=1,
            event_id=job_event_id("d" * 32, 1),
        ),
    ):
        response = post(plane, event, token)
        assert_refused(response, 403, "forbidden")
        assert "own session's job events" in response.json()["error"]["message"]
        assert queued(database, event) == 0
    assert queued(database, theirs) == 0


def test_a_client_key_posts_only_prompts_and_end_requests(plane, database, client_key):
    for event in (prompt_requested(), end_requested(OTHER_SESSION)):
        assert post(plane, event, client_key).status_code == 202
        assert queued(database, event) == 1
    for event in (tick(), job_started(5)):
        response = post(plane, event, client_key)
        assert_refused(response, 403, "forbidden")
        assert "dev.vwm.prompt.requested" in response.json()["error"]["message"]
        assert queued(database, event) == 0


def test_an_admin_key_posts_any_event_of_the_catalogue(plane, database):
    for event in (tick(), job_started(7), prompt_requested()):
        assert post(plane, event, plane.admin_key).status_code == 202
        assert queued(database, event) == 1


def test_no_credential_or_an_unknown_one_is_401_before_the_event_is_judged(plane):
    for credential in (None, "wrong", "vwm_000000000000_not-the-secret"):
        assert_refused(post(plane, tick(), credential), 401, "unauthorized")
    no_event = httpx.post(
        f"{plane.url}/v1/broker", headers={"authorization": "Bearer wrong"}, content=b"{}"
    )
    assert_refused(no_event, 401, "unauthorized")


def test_a_bad_event_is_refused_with_its_code_and_nothing_queued(plane):
    admin = {"authorization": f"Bearer {plane.admin_key}"}
    not_an_event = httpx.post(f"{plane.url}/v1/broker", headers=admin, json={"x": 1})
    assert_refused(not_an_event, 400, "not_a_cloudevent")
    headers, _ = to_binary(tick())
    bad_data = httpx.post(
        f"{plane.url}/v1/broker", headers={**headers, **admin}, content=b'{"schedule": 5}'
    )
    assert_refused(bad_data, 400, "invalid_payload")
    unknown = {**headers, **admin, "ce-type": "dev.vwm.nope"}
    assert_refused(
        httpx.post(f"{plane.url}/v1/broker", headers=unknown, content=b"{}"),
        400,
        "unknown_event_type",
    )


def test_an_event_posted_twice_is_accepted_twice_and_queued_once(plane, database):
    token = harness_token(plane, SESSION)
    event = job_started(9)
    assert post(plane, event, token).status_code == 202
    assert post(plane, event, token, structured=True).status_code == 202
    assert queued(database, event) == 1


def test_an_accepted_job_event_reaches_the_events_function_through_the_broker(plane, database):
    def new_job(session: Session) -> tuple[str, str]:
        owner = factories.session(session)
        return owner.id, factories.job(session, owner, mode="async").id

    session_id, job_id = database(new_job)
    event = job_started(1, session=session_id, job=job_id)
    assert post(plane, event, harness_token(plane, session_id)).status_code == 202

    def state(session: Session) -> tuple[str, list[tuple[str, str, int]]]:
        job = session.get(Job, job_id)
        assert job is not None
        rows = session.execute(
            select(BrokerDelivery.subscription, BrokerDelivery.state, BrokerDelivery.attempts)
            .join(BrokerEvent, BrokerEvent.seq == BrokerDelivery.event_seq)
            .where(BrokerEvent.id == event.id, BrokerEvent.source == event.source)
        )
        return job.status, [(name, row_state, attempts) for name, row_state, attempts in rows]

    deadline = time.monotonic() + 20
    while database(state) != ("running", [("control-plane", "delivered", 1)]):
        assert time.monotonic() < deadline, (database(state), plane.log()[-3000:])
        time.sleep(0.1)


def test_a_database_that_is_down_is_503_and_the_event_is_delivered_once_it_is_back(tmp_path):
    """On PostgreSQL: while the database refuses connections the ingress answers 503
    `broker_unavailable` (a publisher retries it), the delivery loop waits; once it is back the
    same event is queued and delivered to the `events` function."""
    with postgres_database("vwm_broker") as database_url:
        plane = ControlPlane(
            tmp_path / "data",
            {"VWM_DATABASE_URL": database_url, "VWM_TICK_S": "0", "VWM_BROKER_POLL_S": "0.1"},
        )
        plane.start()
        engine = make_engine(database_url)
        factory = session_factory(engine)
        server = create_engine(PG_SERVER_URL, isolation_level="AUTOCOMMIT")
        name = make_url(database_url).database
        try:
            with transaction(factory) as session:
                owner = factories.session(session)
                session_id, job_id = owner.id, factories.job(session, owner, mode="async").id
            event = job_started(1, session=session_id, job=job_id)
            token = harness_token(plane, session_id)
            with server.connect() as connection:
                connection.exec_driver_sql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
                connection.exec_driver_sql(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    f"WHERE datname = '{name}' AND pid <> pg_backend_pid()"
                )
            for credential in (token, plane.admin_key):  # neither needs the database to be refused
                assert_refused(post(plane, event, credential), 503, "broker_unavailable")
            time.sleep(0.5)  # the delivery loop polls a database that is down, and lives on
            with server.connect() as connection:
                connection.exec_driver_sql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            assert post(plane, event, token).status_code == 202
            engine.dispose()  # its connections were terminated
            deadline = time.monotonic() + 20
            while True:
                with transaction(factory) as session:
                    job = session.get(Job, job_id)
                    assert job is not None
                    if job.status == "running":
                        break
                assert time.monotonic() < deadline, plane.log()[-3000:]
                time.sleep(0.1)
        finally:
            with server.connect() as connection:
                connection.exec_driver_sql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            plane.stop()
            engine.dispose()
            server.dispose()
