"""Budgets on PostgreSQL: limits set and validated, charges authenticated by the session's charge
token and counted once, each limit closing the state where it is spent, per-day limits starting
again on the next UTC day, a worker's budget shared by its sessions (also under concurrent
charges), and dispatch: a spent budget fails the job without a harness call, an open one sends
the harness where to charge."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.orm import Session

from functions import admin, sessions
from functions.api import build_app
from functions.context import lookup_key
from functions.db.budgets import BudgetCharges
from functions.db.engine import transaction
from functions.db.models import Job, WorkerSession
from functions.db.transitions import PromptRequest
from functions.embedded import prepare
from functions.job_dispatch import JobStart, dispatch
from functions.runtime.base import HarnessEndpoint
from functions.services import Services, bound
from functions.session_runtime import load
from functions.session_sync import wanted
from functions.settings import ControlPlaneSettings
from tests.db import factories
from tests.support.postgres import postgres_database
from tests.support.raw_server import raw_server

CONTROL_URL = "http://control.test"
STARTED = {"job_id": "j1", "status": "running", "created_at": 1.0, "last_seq": 0}


@dataclass
class Plane:
    services: Services
    client: httpx.AsyncClient

    def rows(self) -> Session:
        return self.services.session_factory()

    def make(self, fn: Any, *args: Any) -> Any:
        with transaction(self.services.session_factory) as session:
            return fn(session, *args)


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    with postgres_database("vwm_budgets") as url:
        yield url


def _services(tmp_path: Path, url: str, control_url: str | None = CONTROL_URL) -> Services:
    env = {"VWM_DATA_DIR": str(tmp_path), "VWM_DATABASE_URL": url}
    if control_url:
        env["VWM_HARNESS_CONTROL_URL"] = control_url
    return Services.build(ControlPlaneSettings.from_env(env))


@pytest.fixture
async def plane(tmp_path: Path, database_url: str) -> AsyncIterator[Plane]:
    key = prepare(database_url)
    services = _services(tmp_path, database_url)
    app = build_app(
        [*admin.ENDPOINTS, *sessions.ENDPOINTS], lookup_key, title="t", services=services
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        if key is None:  # a database the module made before: a key of its own
            from functions.db.api_keys import ApiKeys

            with transaction(services.session_factory) as session:
                _, key = ApiKeys(session).issue("budgets test", "admin")
        client.headers["Authorization"] = f"Bearer {key}"
        with bound(services):
            yield Plane(services, client)
    await services.aclose()


def _setup(plane: Plane, sessions_of_worker: int = 1) -> tuple[str, list[str], str]:
    """A worker with sessions, and a job on the first: (worker name, session ids, job id)."""

    def make(session: Session) -> tuple[str, list[str], str]:
        worker = factories.worker(session, f"w-{datetime.now(UTC).timestamp():.6f}")
        rows = [factories.session(session, worker) for _ in range(sessions_of_worker)]
        return worker.name, [row.id for row in rows], _queue(session, rows[0])

    return plane.make(make)


def _queue(session: Session, row: WorkerSession | None) -> str:
    """A queued job of a prompt request (those may queue behind one another)."""
    assert row is not None
    job_id = uuid.uuid4().hex
    request = PromptRequest(job_id, f"event-{job_id}")
    return factories.job(session, row, mode="async", request=request).id


def _job_on(plane: Plane, session_id: str) -> str:
    def make(session: Session) -> str:
        return _queue(session, session.get(WorkerSession, session_id))

    return plane.make(make)


async def _charge(
    plane: Plane, session_id: str, job_id: str, seq: int, tokens: int = 0, usd: float = 0.0
) -> httpx.Response:
    token = plane.services.token_key.charge_token(session_id)
    return await plane.client.post(
        f"/v1/sessions/{session_id}/charges",
        json={"job_id": job_id, "seq": seq, "usage": {"input": tokens}, "usd": usd},
        headers={"Authorization": f"Bearer {token}"},
    )


# -- limits -----------------------------------------------------------------------------------


async def test_a_worker_budget_is_set_shown_and_validated(plane: Plane) -> None:
    name, _, _ = _setup(plane)
    put = await plane.client.put(
        f"/v1/admin/workers/{name}/budget", json={"tokens_per_day": 1000, "usd_total": 2.5}
    )
    assert put.status_code == 200, put.text
    budget = put.json()
    assert budget["limits"] == {
        "tokens_per_day": 1000,
        "tokens_total": None,
        "usd_per_day": None,
        "usd_total": 2.5,
    }
    assert budget["left"]["tokens_today"] == 1000 and budget["left"]["tokens_total"] is None
    # A field left out keeps its value; null removes it.
    put = await plane.client.put(f"/v1/admin/workers/{name}/budget", json={"usd_total": None})
    assert put.json()["limits"]["tokens_per_day"] == 1000
    assert put.json()["limits"]["usd_total"] is None
    got = await plane.client.get(f"/v1/admin/workers/{name}/budget")
    assert got.json() == put.json()
    worker = await plane.client.get(f"/v1/admin/workers/{name}")
    assert worker.json()["budget"]["limits"]["tokens_per_day"] == 1000

    for bad in ({"tokens_per_day": -1}, {"usd_per_day": -0.5}, {"tokens": 5}, {"usd_total": "1"}):
        refused = await plane.client.put(f"/v1/admin/workers/{name}/budget", json=bad)
        assert refused.status_code == 422, (bad, refused.text)
        assert refused.json()["error"]["code"] == "invalid_request"
    missing = await plane.client.put("/v1/admin/workers/nobody/budget", json={})
    assert missing.status_code == 404


async def test_a_session_budget_is_set_shown_and_removed(plane: Plane) -> None:
    _, [session_id], _ = _setup(plane)
    put = await plane.client.put(
        f"/v1/sessions/{session_id}/budget", json={"tokens": 500, "usd": 1}
    )
    assert put.status_code == 200, put.text
    assert put.json()["limits"] == {"tokens": 500, "usd": 1.0}
    shown = (await plane.client.get(f"/v1/sessions/{session_id}")).json()["budget"]
    assert shown["left"] == {"tokens": 500, "usd": 1.0}
    assert shown["state"]["open"] is True and shown["state"]["tokens_left"] == 500
    removed = await plane.client.put(f"/v1/sessions/{session_id}/budget", json={"tokens": None})
    assert removed.json()["limits"] == {"tokens": None, "usd": 1.0}
    refused = await plane.client.put(f"/v1/sessions/{session_id}/budget", json={"tokens": -3})
    assert refused.status_code == 422
    missing = await plane.client.put("/v1/sessions/nope/budget", json={"tokens": 1})
    assert missing.status_code == 404


# -- charges ----------------------------------------------------------------------------------


async def test_a_charge_needs_the_sessions_own_charge_token(plane: Plane) -> None:
    _, [mine, other], job_id = _setup(plane, sessions_of_worker=2)
    body = {"job_id": job_id, "seq": 1, "usage": {"input": 10}}
    url = f"/v1/sessions/{mine}/charges"
    keys = plane.services.token_key
    for headers in (
        {"Authorization": ""},  # no token (and the API key is not one)
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {keys.charge_token(other)}"},  # another session's
        {"Authorization": f"Bearer {keys.token(mine)}"},  # the harness token is not it
        {"Authorization": plane.client.headers["Authorization"]},  # an admin API key neither
    ):
        answer = await plane.client.post(url, json=body, headers=headers)
        assert answer.status_code == 401, (headers, answer.text)
        assert answer.json()["error"]["code"] == "invalid_charge_token"
    assert keys.charge_token(mine) != keys.token(mine)
    ok = await _charge(plane, mine, job_id, 1, tokens=10)
    assert ok.status_code == 200, ok.text
    assert ok.json() == {"open": True, "reason": None, "tokens_left": None, "usd_left": None}


async def test_a_bad_charge_is_422(plane: Plane) -> None:
    _, [mine, other], job_id = _setup(plane, sessions_of_worker=2)
    token = plane.services.token_key.charge_token(mine)
    headers = {"Authorization": f"Bearer {token}"}
    url = f"/v1/sessions/{mine}/charges"
    for body in ({"job_id": job_id, "seq": -1}, {"job_id": job_id, "seq": 1, "usd": -1}, {}):
        answer = await plane.client.post(url, json=body, headers=headers)
        assert answer.status_code == 422, answer.text
    other_job = _job_on(plane, other)  # a job of another session: not this meter's to charge
    answer = await plane.client.post(url, json={"job_id": other_job, "seq": 1}, headers=headers)
    assert answer.status_code == 422 and answer.json()["error"]["code"] == "charge_invalid"


async def test_a_charge_sent_again_counts_once(plane: Plane) -> None:
    name, [session_id], job_id = _setup(plane)
    await plane.client.put(f"/v1/admin/workers/{name}/budget", json={"tokens_total": 1000})
    for _ in range(3):
        answer = await _charge(plane, session_id, job_id, 1, tokens=300)
        assert answer.json()["tokens_left"] == 700
    budget = (await plane.client.get(f"/v1/admin/workers/{name}/budget")).json()
    assert budget["used"]["tokens_total"] == 300


@pytest.mark.parametrize(
    ("where", "field", "limit", "tokens", "usd"),
    [
        ("worker", "tokens_per_day", 1000, 250, 0.0),
        ("worker", "tokens_total", 1000, 250, 0.0),
        ("worker", "usd_per_day", 1.0, 0, 0.25),
        ("worker", "usd_total", 1.0, 0, 0.25),
        ("session", "tokens", 1000, 250, 0.0),
        ("session", "usd", 1.0, 0, 0.25),
    ],
)
async def test_each_limit_closes_the_state_once_spent(
    plane: Plane, where: str, field: str, limit: float, tokens: int, usd: float
) -> None:
    name, [session_id], job_id = _setup(plane)
    path = (
        f"/v1/admin/workers/{name}/budget"
        if where == "worker"
        else f"/v1/sessions/{session_id}/budget"
    )
    assert (await plane.client.put(path, json={field: limit})).status_code == 200
    states = [
        (await _charge(plane, session_id, job_id, seq, tokens, usd)).json()
        for seq in (1, 2, 3, 4, 5)
    ]
    assert [state["open"] for state in states] == [True, True, True, False, False]
    reason = states[3]["reason"]
    assert "is spent: raise it with PUT " + path in reason
    assert ("daily" in reason) == field.endswith("per_day")
    left = "tokens_left" if tokens else "usd_left"
    assert [state[left] for state in states] == [limit * 0.75, limit * 0.5, limit * 0.25, 0, 0]
    # Raised, it opens again (what the next job's dispatch checks).
    await plane.client.put(path, json={field: limit * 2})
    shown = (await plane.client.get(f"/v1/sessions/{session_id}")).json()["budget"]["state"]
    assert shown["open"] is True


async def test_a_daily_budget_starts_again_on_the_next_utc_day(plane: Plane) -> None:
    name, [session_id], job_id = _setup(plane)
    await plane.client.put(f"/v1/admin/workers/{name}/budget", json={"tokens_per_day": 1000})

    def yesterday(session: Session) -> None:
        row = session.get(WorkerSession, session_id)
        midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        BudgetCharges(session).add(
            job_id=job_id,
            seq=90,
            session_id=session_id,
            worker_id=row.worker_id,
            tokens=5000,
            usd=0.0,
            charged_at=midnight - timedelta(microseconds=1),
        )

    plane.make(yesterday)
    answer = (await _charge(plane, session_id, job_id, 1, tokens=100)).json()
    assert answer["open"] is True and answer["tokens_left"] == 900
    budget = (await plane.client.get(f"/v1/admin/workers/{name}/budget")).json()
    assert budget["used"] == {
        "tokens_today": 100,
        "tokens_total": 5100,
        "usd_today": 0.0,
        "usd_total": 0.0,
    }


async def test_two_sessions_of_a_worker_share_its_budget(plane: Plane) -> None:
    name, [first, second], job_id = _setup(plane, sessions_of_worker=2)
    other_job = _job_on(plane, second)
    await plane.client.put(f"/v1/admin/workers/{name}/budget", json={"tokens_total": 1000})
    assert (await _charge(plane, first, job_id, 1, tokens=600)).json()["open"] is True
    state = (await _charge(plane, second, other_job, 1, tokens=400)).json()
    assert (
        state["open"] is False and f"worker {name}'s total token budget (1000)" in state["reason"]
    )
    # The first session's next charge sees the second's.
    assert (await _charge(plane, first, job_id, 2)).json()["open"] is False


async def test_concurrent_charges_of_two_sessions_are_counted_exactly(plane: Plane) -> None:
    name, [first, second], job_a = _setup(plane, sessions_of_worker=2)
    job_b = _job_on(plane, second)
    await plane.client.put(f"/v1/admin/workers/{name}/budget", json={"tokens_total": 1000})
    charges = [
        _charge(plane, session, job, seq, tokens=100)
        for seq in range(1, 11)
        for session, job in ((first, job_a), (second, job_b))
    ]
    answers = await asyncio.gather(*charges)
    states = [answer.json() for answer in answers]
    assert all(answer.status_code == 200 for answer in answers)
    # Counted one after another: nine answers saw 100..900 used, eleven 1000..2000.
    assert sorted(state["tokens_left"] for state in states if state["open"]) == list(
        range(100, 1000, 100)
    )
    assert sum(not state["open"] for state in states) == 11
    budget = (await plane.client.get(f"/v1/admin/workers/{name}/budget")).json()
    assert budget["used"]["tokens_total"] == 2000


# -- dispatch ---------------------------------------------------------------------------------


def _recording_harness(requests: list[dict[str, Any]]) -> Any:
    def record(conn: socket.socket, head: bytearray) -> None:
        _, _, body = head.partition(b"\r\n\r\n")
        conn.settimeout(2)
        while not body.endswith(b"}"):
            body += conn.recv(65536)
        requests.append(json.loads(body))
        answer = json.dumps(STARTED).encode()
        conn.sendall(
            b"HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(answer), answer)
        )

    return record


async def _dispatch(plane: Plane, session_id: str, job_id: str, url: str) -> None:
    view = await plane.services.db(load, session_id)
    want = await plane.services.db(wanted, view)
    # As a harness that has everything already: only the job start goes to it.
    view.session.instructions_version = want.instructions_version
    view.session.worker_revision = want.worker_revision
    view.session.skills_digest = want.skills_digest
    endpoint = HarnessEndpoint(url, plane.services.token_key.token(session_id))
    await dispatch(view, endpoint, JobStart(job_id=job_id, prompt="hi", timeout_s=None), want)


def _job(plane: Plane, job_id: str) -> Job:
    with plane.rows() as session:
        return session.get(Job, job_id)  # type: ignore[return-value]


async def test_dispatch_without_a_budget_sends_the_job_start_as_before(plane: Plane) -> None:
    _, [session_id], job_id = _setup(plane)
    requests: list[dict[str, Any]] = []
    with raw_server(_recording_harness(requests)) as harness:
        await _dispatch(plane, session_id, job_id, harness.url)
    assert len(requests) == 1 and "budget" not in requests[0]


async def test_dispatch_under_an_open_budget_tells_the_harness_where_to_charge(
    plane: Plane,
) -> None:
    _, [session_id], job_id = _setup(plane)
    await plane.client.put(f"/v1/sessions/{session_id}/budget", json={"usd": 5})
    requests: list[dict[str, Any]] = []
    with raw_server(_recording_harness(requests)) as harness:
        await _dispatch(plane, session_id, job_id, harness.url)
    assert requests[0]["budget"] == {
        "charge_url": f"{CONTROL_URL}/v1/sessions/{session_id}/charges",
        "charge_token": plane.services.token_key.charge_token(session_id),
    }


async def test_a_spent_budget_fails_the_job_without_a_harness_call_until_raised(
    plane: Plane,
) -> None:
    from functions.budgets import BudgetExceeded

    name, [session_id], job_id = _setup(plane)
    await plane.client.put(f"/v1/admin/workers/{name}/budget", json={"tokens_per_day": 100})
    await _charge(plane, session_id, job_id, 1, tokens=100)
    next_job = _job_on(plane, session_id)
    requests: list[dict[str, Any]] = []
    with raw_server(_recording_harness(requests)) as harness:
        with pytest.raises(BudgetExceeded) as refused:
            await _dispatch(plane, session_id, next_job, harness.url)
        assert refused.value.status == 402
        assert requests == [] and harness.received == []  # never contacted
        job = _job(plane, next_job)
        assert job.status == "failed"
        assert job.error is not None and job.error["code"] == "budget_exceeded"
        assert f"PUT /v1/admin/workers/{name}/budget" in job.error["message"]

        # Raised: the next job runs, with its budget.
        await plane.client.put(f"/v1/admin/workers/{name}/budget", json={"tokens_per_day": 200})
        third = _job_on(plane, session_id)
        await _dispatch(plane, session_id, third, harness.url)
    assert len(requests) == 1 and requests[0]["job_id"] == third and "budget" in requests[0]


async def test_a_budget_without_a_control_url_is_unenforceable(
    tmp_path: Path, plane: Plane, database_url: str
) -> None:
    from functions.budgets import BudgetUnenforceable

    _, [session_id], job_id = _setup(plane)
    await plane.client.put(f"/v1/sessions/{session_id}/budget", json={"tokens": 10})
    services = _services(tmp_path / "other", database_url, control_url=None)
    try:
        with bound(services), pytest.raises(BudgetUnenforceable) as refused:
            view = await services.db(load, session_id)
            want = await services.db(wanted, view)
            start = JobStart(job_id=job_id, prompt="hi", timeout_s=None)
            await dispatch(view, HarnessEndpoint("http://127.0.0.1:9", "t"), start, want)
    finally:
        await services.aclose()
    assert "VWM_HARNESS_CONTROL_URL" in refused.value.message
    job = _job(plane, job_id)
    assert job.error is not None and job.error["code"] == "budget_unenforceable"
