"""Each function deploys alone: the image's command (`python -m functions.serve --target NAME`,
functions-framework's app served in its own process) serves its own routes (with auth and its own
OpenAPI part) and nothing of the others'; so does the plain `functions-framework --target NAME
--asgi`, the same function behind gunicorn."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, create_engine, make_url

from eventing.codec import to_binary
from eventing.events import JobStarted, VwmEvent, harness_source, job_event_id, new_event
from functions.db.engine import make_engine, session_factory, transaction
from functions.db.models import Job
from functions.embedded import prepare
from tests.db import factories
from tests.support.harness_process import REPO_ROOT, free_port
from tests.support.postgres import PG_SERVER_URL, postgres_database

OWN_PATH = {
    "admin": "/v1/admin/runtimes",
    "sessions": "/v1/sessions",
    "prompts": "/v1/jobs/unknown",
    "telemetry": "/v1/telemetry/summary",
}


@pytest.fixture(scope="module")
def database(tmp_path_factory) -> tuple[Path, str]:
    data_dir = tmp_path_factory.mktemp("data")
    key = prepare(f"sqlite:///{data_dir / 'vwm.sqlite3'}")
    assert key is not None
    return data_dir, key


# The program each way of serving a target starts, before the options both take.
IMAGE_COMMAND = [sys.executable, "-m", "functions.serve"]  # infra/docker/functions.Dockerfile
FUNCTIONS_FRAMEWORK = [str(Path(sys.executable).parent / "functions-framework")]


def _serve(
    target: str,
    data_dir: Path,
    *extra: str,
    env: dict[str, str] | None = None,
    program: list[str] = IMAGE_COMMAND,
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            *program,
            "--source",
            str(REPO_ROOT / "functions" / "main.py"),
            "--target",
            target,
            "--asgi",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *extra,
        ],
        cwd=REPO_ROOT,
        env={**os.environ, "VWM_DATA_DIR": str(data_dir), **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    return proc, f"http://127.0.0.1:{port}"


def _wait_listening(url: str, path: str = "/healthz") -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(url + path, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)


@pytest.mark.parametrize(
    ("target", "program"),
    [
        *((target, IMAGE_COMMAND) for target in sorted(OWN_PATH)),
        ("prompts", FUNCTIONS_FRAMEWORK),
    ],
    ids=lambda value: value if isinstance(value, str) else Path(value[-1]).name,
)
def test_function_serves_only_its_own_routes(target, program, database):
    data_dir, key = database
    proc, url = _serve(target, data_dir, program=program)
    headers = {"Authorization": f"Bearer {key}"}
    try:
        _wait_listening(url)
        own = httpx.get(url + OWN_PATH[target], headers=headers)
        expected = 404 if target == "prompts" else 200  # an unknown job: routed, then not found
        assert own.status_code == expected, own.text
        if target == "prompts":
            assert "no job" in own.json()["error"]["message"]  # routed, not an unknown path
        assert httpx.get(url + OWN_PATH[target]).status_code == 401
        for other, path in OWN_PATH.items():
            if other != target:
                foreign = httpx.get(url + path, headers=headers)
                assert foreign.status_code == 404, (target, path)
        paths = httpx.get(f"{url}/openapi.json").json()["paths"]
        assert any(p.startswith(OWN_PATH[target].rsplit("/", 1)[0]) for p in paths)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _started_event(engine: Engine) -> VwmEvent:
    """A queued job's `job.started`, the job made in the database behind `engine`."""
    with transaction(session_factory(engine)) as session:
        owner = factories.session(session)
        job_id = factories.job(session, owner, mode="async").id
        session_id = owner.id
    return new_event(
        JobStarted(prompt="hello", cli="claude", started_at=datetime.now(UTC)),
        source=harness_source(session_id),
        session_id=session_id,
        job_id=job_id,
        seq=1,
        event_id=job_event_id(job_id, 1),
    )


def _job_status(engine: Engine, job_id: str) -> str:
    with transaction(session_factory(engine)) as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job.status


def test_the_events_function_answers_503_while_its_database_is_down(tmp_path):
    """A retry can fix a database that is down: 503, so the broker retries; once it is back the
    same delivery is applied."""
    with postgres_database("vwm_events") as database_url:
        prepare(database_url)
        engine = make_engine(database_url)
        started = _started_event(engine)
        engine.dispose()
        proc, url = _serve(
            "events",
            tmp_path,
            "--signature-type",
            "cloudevent",
            env={"VWM_DATABASE_URL": database_url},
        )
        server = create_engine(PG_SERVER_URL, isolation_level="AUTOCOMMIT")
        name = make_url(database_url).database
        headers, body = to_binary(started)
        try:
            _wait_listening(url, "/")
            with server.connect() as connection:
                connection.exec_driver_sql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
                connection.exec_driver_sql(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    f"WHERE datname = '{name}' AND pid <> pg_backend_pid()"
                )
            down = httpx.post(url, headers=headers, content=body)
            assert down.status_code == 503, down.text
            assert down.json()["error"]["code"] == "events_unavailable"
            with server.connect() as connection:
                connection.exec_driver_sql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            assert httpx.post(url, headers=headers, content=body).status_code == 200
            engine = make_engine(database_url)
            assert _job_status(engine, str(started.jobid)) == "running"
            engine.dispose()
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            server.dispose()


@pytest.mark.parametrize(
    "program", [IMAGE_COMMAND, FUNCTIONS_FRAMEWORK], ids=["image", "functions-framework"]
)
def test_the_events_function_serves_alone_as_a_cloudevent_target(program, database):
    """What a Knative Trigger delivers: a job event is applied (2xx, the job runs), a malformed
    one is refused with a 4xx and changes nothing."""
    data_dir, _ = database
    engine = make_engine(f"sqlite:///{data_dir / 'vwm.sqlite3'}")
    started = _started_event(engine)
    proc, url = _serve("events", data_dir, "--signature-type", "cloudevent", program=program)

    def status() -> str:
        return _job_status(engine, str(started.jobid))

    try:
        _wait_listening(url, "/")
        headers, body = to_binary(started)
        bad = httpx.post(url, headers={**headers, "ce-type": "dev.vwm.nope"}, content=body)
        assert bad.status_code == 400, bad.text
        assert bad.json()["error"]["code"] == "unknown_event_type"
        assert status() == "queued"
        answer = httpx.post(url, headers=headers, content=body)
        assert answer.status_code == 200, answer.text
        assert status() == "running"
        assert httpx.post(url, headers=headers, content=body).status_code == 200  # a duplicate
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        engine.dispose()


def test_the_console_function_serves_its_pages_and_no_api(tmp_path):
    """The console deploys alone: its page and scripts, no database, nothing of the API's."""
    proc, url = _serve(
        "console", tmp_path, env={"VWM_DATABASE_URL": "postgresql+pg8000://x@nowhere/x"}
    )
    try:
        _wait_listening(url)
        assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
        page = httpx.get(f"{url}/", follow_redirects=True)
        assert page.status_code == 200 and str(page.url).endswith("/ui/")
        assert "static/js/app.js" in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert httpx.get(f"{url}/ui/static/console.css").status_code == 200
        assert httpx.get(f"{url}/v1/sessions").status_code == 404
    finally:
        proc.terminate()
        proc.wait(timeout=10)
