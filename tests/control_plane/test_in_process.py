"""The control plane's apps driven in this process, with nothing process-global: each app's state
(`functions.services.Services`: settings, engine, backend, harness pool, relaunch locks,
background work) is built in its lifespan and reached through ``request.state`` and the context
variable its middleware binds. Two embedded apps on two data folders run here at once and never
see each other's workers, sessions or events; a session start fails cleanly in each (its harness
is a real subprocess)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from eventing.codec import to_binary
from eventing.events import CONTROL_PLANE_SOURCE, Tick, new_event
from functions import context
from functions.api import Endpoint, build_app
from functions.embedded import create_app, prepare
from functions.main import LifespanFailed, Started
from functions.services import Services, ServicesClosed, ServicesNotBound
from functions.settings import ControlPlaneSettings
from tests.control_plane.conftest import harness_pids, kill_harnesses
from tests.support.harness_process import CLI_BIN
from tests.support.lifespan import serving
from vwm.local.clis import pinned_version


def _settings(data_dir: Path) -> ControlPlaneSettings:
    """An embedded control plane's settings on `data_dir`, read from a mapping, not from this
    process's environment: nothing here may depend on what another app set."""
    return ControlPlaneSettings.from_env(
        {
            "VWM_DATA_DIR": str(data_dir),
            "VWM_ALLOW_LOCAL_REPOS": "1",
            "VWM_SANDBOX": "off",
            "VWM_HARNESS_READY_TIMEOUT_S": "30",
        }
    )


class Plane:
    """One embedded app on its own data folder, served in this process and loop with its
    lifespan (services, broker, start-up reconcile)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.services = Services.build(_settings(data_dir))
        key = prepare(self.services.settings.database_url)
        assert key is not None
        self.key = key
        self.app = create_app(self.services, close_services=True)
        self.client: httpx.AsyncClient

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[Plane]:
        async with serving(self.app) as client:
            client.headers["Authorization"] = f"Bearer {self.key}"
            self.client = client
            yield self


@pytest.fixture
async def planes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Plane, Plane]]:
    # The CLI a harness would run (never reached: the clone fails first); read at launch.
    monkeypatch.setenv("VWM_CLAUDE_BIN", str(CLI_BIN / "claude"))
    try:
        async with Plane(tmp_path / "a").serving() as a, Plane(tmp_path / "b").serving() as b:
            yield a, b
    finally:
        for name in ("a", "b"):
            kill_harnesses(tmp_path / name)


async def _runtime_and_worker(plane: Plane, repo: Path) -> None:
    runtime = await plane.client.post(
        "/v1/admin/runtimes",
        json={"name": "claude-local", "cli": "claude", "cli_version": pinned_version("claude")},
    )
    assert runtime.status_code == 201, runtime.text
    worker = await plane.client.post(
        "/v1/admin/workers",
        json={"name": "helper", "runtime": "claude-local", "repo_url": str(repo)},
    )
    assert worker.status_code == 201, worker.text


async def _worker_names(plane: Plane) -> list[str]:
    answer = await plane.client.get("/v1/admin/workers")
    assert answer.status_code == 200, answer.text
    return [worker["name"] for worker in answer.json()["items"]]


async def test_two_apps_in_one_process_share_nothing(planes, tmp_path):
    a, b = planes
    assert a.services is not b.services
    assert a.services.engine is not b.services.engine
    assert a.services.harness_http is not b.services.harness_http

    await _runtime_and_worker(a, tmp_path / "no-such-repo.git")
    assert await _worker_names(a) == ["helper"]
    assert await _worker_names(b) == []  # what A created is in A's database only
    unknown = await b.client.post("/v1/sessions", json={"worker": "helper"})
    assert unknown.status_code == 404, unknown.text

    await _runtime_and_worker(b, tmp_path / "another-missing-repo.git")
    assert await _worker_names(b) == ["helper"]


async def test_a_session_start_fails_cleanly_in_each_app(planes, tmp_path):
    a, b = planes
    for plane in planes:
        await _runtime_and_worker(plane, tmp_path / f"missing-{plane.data_dir.name}.git")

    # Waited for, in both apps at once: each harness starts (a real process), its clone fails,
    # which is the caller's to fix (422), and it is stopped.
    answers = await asyncio.gather(
        *(plane.client.post("/v1/sessions", json={"worker": "helper"}) for plane in planes)
    )
    failed = {}
    for plane, answer in zip(planes, answers, strict=True):
        assert answer.status_code in (422, 503), answer.text
        error = answer.json()["error"]
        assert error["code"] == "session_failed", error
        failed[plane.data_dir.name] = error["details"]["session_id"]
        assert harness_pids(plane.data_dir) == []

    # Each app lists only its own session.
    for plane in planes:
        items = (await plane.client.get("/v1/sessions")).json()["items"]
        assert [s["id"] for s in items] == [failed[plane.data_dir.name]]
        assert items[0]["status"] == "failed"

    # Not waited for: the start runs as the app's background work, and fails the same way.
    started = await a.client.post("/v1/sessions", json={"worker": "helper", "wait": False})
    assert started.status_code == 202, started.text
    session_id = started.json()["id"]
    (task,) = a.services.background
    await asyncio.wait_for(task, 60)
    status = (await a.client.get(f"/v1/sessions/{session_id}")).json()
    assert status["status"] == "failed" and status["error"]["code"] == "git_failed", status
    assert (await b.client.get(f"/v1/sessions/{session_id}")).status_code == 404
    assert a.services.background == frozenset()  # the task is gone once done


async def test_each_apps_broker_delivers_with_its_own_services(planes):
    """An event posted to A is queued in A's database and delivered by A's loop to the `events`
    function, which reaches A's services (a delivery without them would fail and stay
    pending); B's broker sees nothing."""
    a, b = planes
    headers, body = to_binary(new_event(Tick(), source=CONTROL_PLANE_SOURCE))
    posted = await a.client.post("/v1/broker", headers=headers, content=body)
    assert posted.status_code == 202, posted.text

    deadline = time.monotonic() + 30
    while (seen := await a.app.state.broker.status())["delivered"] < 1:
        assert time.monotonic() < deadline, seen
        await asyncio.sleep(0.05)
    assert seen["events"] == 1 and seen["dead"] == 0, seen
    other = await b.app.state.broker.status()
    assert other["events"] == 0 and other["delivered"] == 0, other


async def test_the_lifespan_closes_the_services_it_was_given_to_close(tmp_path):
    services = Services.build(_settings(tmp_path / "data"))
    prepare(services.settings.database_url)
    async with serving(create_app(services, close_services=True)) as client:
        assert (await client.get("/healthz")).status_code == 200
        pool = services.harness_http
    assert pool.is_closed
    with pytest.raises(ServicesClosed):
        services.harness_http  # noqa: B018 (a closed app makes no new pool)


# -- build_app, the binding and the lifespan --------------------------------------------------


async def _whose(request: Request) -> Response:
    """Which services the request sees, through its state and through the accessors."""
    bound = context.services()
    return JSONResponse(
        {
            "state_is_bound": request.state.services is bound,
            "services": id(bound),
            "data_dir": str(context.settings().data_dir),
        }
    )


WHOSE = [Endpoint("GET", "/whose", _whose, "which services", public=True)]


async def _any_key(_: str) -> str | None:
    """Every bearer key is an admin key (these tests are about state, not auth)."""
    return "admin"


KEY = {"Authorization": "Bearer any"}


async def test_each_request_sees_its_own_apps_services():
    apps = {name: build_app(WHOSE, _any_key, title=name) for name in ("one", "two")}
    seen = {}
    async with serving(apps["one"]) as one, serving(apps["two"]) as two:
        for name, client in (("one", one), ("two", two)):
            seen[name] = [(await client.get("/whose", headers=KEY)).json() for _ in range(2)]
    # Built by each app's lifespan: bound in its requests, the same for all of them, and not
    # the other app's.
    assert all(answer["state_is_bound"] for answers in seen.values() for answer in answers)
    assert seen["one"][0]["services"] == seen["one"][1]["services"]
    assert seen["one"][0]["services"] != seen["two"][0]["services"]


async def test_given_services_serve_without_a_lifespan(tmp_path):
    """``httpx.ASGITransport`` runs no lifespan: an app given its services still serves."""
    services = Services.build(_settings(tmp_path / "given"))
    app = build_app(WHOSE, _any_key, title="given", services=services)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        answer = (await client.get("/whose", headers=KEY)).json()
    assert answer == {
        "state_is_bound": True,
        "services": id(services),
        "data_dir": str(tmp_path / "given"),
    }
    await services.aclose()


async def test_an_app_without_services_says_what_to_do(tmp_path):
    app = build_app(WHOSE, _any_key, title="bare")
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=True)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        with pytest.raises(ServicesNotBound, match="lifespan did not run"):
            await client.get("/whose", headers=KEY)


async def test_the_accessors_refuse_outside_an_app():
    with pytest.raises(ServicesNotBound, match="build_app"):
        await context.db(lambda session: None)
    with pytest.raises(ServicesNotBound):
        context.settings()
    with pytest.raises(ServicesNotBound):
        context.backend()


async def test_bound_services_reach_the_accessors_and_worker_threads(tmp_path):
    services = Services.build(_settings(tmp_path / "bound"))
    prepare(services.settings.database_url)
    with context.bound(services):
        # `fn` runs in a worker thread and still sees the services (settings read there).
        assert await context.db(lambda _: context.settings().data_dir) == tmp_path / "bound"
    with pytest.raises(ServicesNotBound):
        context.settings()
    await services.aclose()


# -- Services: background work, locks ------------------------------------------------------


async def test_background_work_runs_bound_and_is_cancelled_at_close(tmp_path):
    services = Services.build(_settings(tmp_path / "bg"))
    seen: list[Services] = []
    never = asyncio.Event()

    async def work() -> None:
        seen.append(context.services())
        await never.wait()

    task = services.spawn(work(), name="forever")
    await asyncio.sleep(0)
    assert seen == [services] and services.background == {task}
    await services.aclose()
    assert task.cancelled() and services.background == frozenset()
    work_after = work()
    with pytest.raises(ServicesClosed):
        services.spawn(work_after)


async def test_relaunch_locks_serialize_one_session_and_forget_it_after(tmp_path):
    services = Services.build(_settings(tmp_path / "locks"))
    order: list[str] = []

    async def relaunch(name: str, session_id: str) -> None:
        async with services.relaunch_locks.hold(session_id):
            order.append(f"{name} in")
            await asyncio.sleep(0.02)
            order.append(f"{name} out")

    await asyncio.gather(relaunch("first", "s1"), relaunch("second", "s1"), relaunch("x", "s2"))
    assert order.index("first out") < order.index("second in")
    assert order.index("x in") < order.index("first out")  # another session does not wait
    assert len(services.relaunch_locks) == 0


# -- functions-framework: the lifespan started by the first request --------------------------


async def test_a_function_app_starts_its_lifespan_on_the_first_request(tmp_path, monkeypatch):
    """What `functions.main` does under functions-framework, which runs no lifespan of ours."""
    monkeypatch.setenv("VWM_DATA_DIR", str(tmp_path / "ff"))
    started = Started(build_app(WHOSE, _any_key, title="ff"))
    transport = httpx.ASGITransport(app=started)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        first, second = await asyncio.gather(
            client.get("/whose", headers=KEY), client.get("/whose", headers=KEY)
        )
    state = await started.state()
    assert isinstance(state["services"], Services)
    assert (
        first.json()
        == second.json()
        == {
            "state_is_bound": True,
            "services": id(state["services"]),
            "data_dir": str(tmp_path / "ff"),
        }
    )
    assert (await started.state())["services"] is state["services"]  # built once


async def test_a_function_app_that_cannot_start_says_why_and_retries():
    calls = []

    async def broken(scope, receive, send) -> None:
        calls.append(scope["type"])
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "VWM_X must be a number"})

    started = Started(broken)  # type: ignore[arg-type]
    for _ in range(2):
        with pytest.raises(LifespanFailed, match="VWM_X must be a number"):
            await started.state()
    assert calls == ["lifespan", "lifespan"]


def test_a_function_apps_services_close_when_the_servers_loop_ends(tmp_path, monkeypatch):
    """The server stops: its loop cancels the lifespan's task, which closes the services."""
    monkeypatch.setenv("VWM_DATA_DIR", str(tmp_path / "ff"))
    started = Started(build_app(WHOSE, _any_key, title="ff"))
    with asyncio.Runner() as runner:
        services = runner.run(started.state())["services"]
        pool = services.harness_http
        assert not pool.is_closed
    assert pool.is_closed
    with pytest.raises(ServicesClosed):
        services.spawn(asyncio.sleep(0))
