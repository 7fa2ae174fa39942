"""The control plane against a hostile corpus (`tests.support.hostile`), over real HTTP, on both
database backends (SQLite, and PostgreSQL, which refuses NUL and out-of-range values that SQLite
stores): every case gets its documented 4xx and a JSON error with a stable code, never a 500,
and nothing is written. Plus the documented `vwm telemetry --since 2025-06-01`, end to end."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from functions.db.engine import make_engine, session_factory, transaction
from functions.db.models import Base, JobStatus, TelemetryRequest
from tests.db import factories
from tests.support.control_plane import ControlPlane, kill_harnesses
from tests.support.harness_process import REPO_ROOT
from tests.support.hostile import (
    BAD_SEGMENTS,
    BAD_TIMESTAMPS,
    CONTROL_CHARACTERS,
    GOOD_TIMESTAMPS,
    NOT_ASCII_INTEGERS,
    Case,
    body_cases,
    wrong_answers,
)
from tests.support.postgres import postgres_database

MISSING = "0" * 32  # a well-formed id that names nothing


@dataclass
class Plane:
    plane: ControlPlane
    database_url: str
    job_id: str


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def plane(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    data_dir = tmp_path_factory.mktemp(f"hostile-{request.param}") / "data"
    with contextlib.ExitStack() as stack:
        if request.param == "postgresql":
            url = stack.enter_context(postgres_database("vwm_hostile"))
        else:
            url = f"sqlite:///{data_dir / 'vwm.sqlite3'}"
        plane = ControlPlane(data_dir, {"VWM_DATABASE_URL": url})
        stack.callback(kill_harnesses, data_dir)
        stack.callback(plane.stop)
        plane.start()
        yield Plane(plane, url, _seed(plane, url))


def _seed(plane: ControlPlane, url: str) -> str:
    """A runtime, a worker and a setting to aim writes at; an ended session with one recorded
    job on each side of 2025-06-01T00:00Z. Returns that job's id."""
    with plane.client() as client:
        for path, body in [
            ("/v1/admin/runtimes", {"name": "rt", "cli": "claude", "cli_version": "1.0.0"}),
            ("/v1/admin/workers", {"name": "wk", "runtime": "rt", "repo_url": "/nowhere"}),
        ]:
            assert client.post(path, json=body).status_code == 201
        setting = client.put("/v1/admin/settings/global_instructions", json={"value": "be kind"})
        assert setting.status_code == 200
    engine = make_engine(url)
    try:
        with transaction(session_factory(engine)) as db:
            worker = factories.worker(db, "telemetry-worker")
            session = factories.session(db, worker)
            first = None
            for hour in ((2025, 5, 31, 23), (2025, 6, 1, 1)):
                job = factories.job(db, session, prompt=f"at {hour}")
                job.status = JobStatus.SUCCEEDED
                db.add(
                    TelemetryRequest(
                        job_id=job.id,
                        session_id=session.id,
                        worker_id=worker.id,
                        runtime_id=worker.runtime_id,
                        cli="claude",
                        status="succeeded",
                        created_at=datetime(*hour, tzinfo=UTC),
                    )
                )
                db.flush()
                first = first or job.id
            session.status = "ended"  # events are replayed from the record, no harness wanted
            assert first is not None
            return first
    finally:
        engine.dispose()


def _snapshot(url: str) -> dict[str, Any]:
    """Row counts of every table, and the rows a hostile write would have changed."""
    engine = make_engine(url)
    watched = {"runtimes", "workers", "system_settings", "sessions", "jobs"}
    try:
        with engine.connect() as connection:
            counts = {
                table.name: connection.scalar(select(func.count()).select_from(table))
                for table in Base.metadata.sorted_tables
            }
            rows = {
                table.name: sorted(map(repr, connection.execute(select(table)).all()))
                for table in Base.metadata.sorted_tables
                if table.name in watched
            }
        return {"counts": counts, "rows": rows}
    finally:
        engine.dispose()


def _run(plane: Plane, cases: list[Case]) -> None:
    """Send every case; collect each answer that differs from the expected one, then assert
    none did and that the database is as before."""
    before = _snapshot(plane.database_url)
    with plane.plane.client(timeout=30) as client:
        wrong = wrong_answers(client, cases)
    assert not wrong, wrong
    assert _snapshot(plane.database_url) == before
    assert "Traceback" not in plane.plane.log()


# -- bodies -----------------------------------------------------------------------------------

WRITES = [
    ("POST", "/v1/admin/runtimes", {"name": "rt-new", "cli": "claude", "cli_version": "1.0.0"}),
    ("PATCH", "/v1/admin/runtimes/rt", {"cli_version": "2.0.0"}),
    ("POST", "/v1/admin/workers", {"name": "wk-new", "runtime": "rt", "repo_url": "/r"}),
    ("PATCH", "/v1/admin/workers/wk", {"instructions": "changed"}),
    ("PUT", "/v1/admin/settings/global_instructions", {"value": "changed"}),
    ("POST", "/v1/admin/keys", {"name": "k", "scope": "client"}),
    ("POST", "/v1/sessions", {"worker": "wk", "wait": False}),
    ("POST", "/v1/prompts", {"session_id": MISSING, "prompt": "hi", "mode": "async"}),
]


def test_hostile_bodies_get_400_or_415_and_write_nothing(plane):
    cases = body_cases(WRITES)
    assert len(cases) > 350
    _run(plane, cases)


def test_well_formed_bodies_of_the_wrong_shape_get_422_and_write_nothing(plane):
    invalid = "invalid_request"
    cases = [
        Case(method, path, 422, invalid, content=json.dumps(body).encode())
        for method, path, body in [
            ("POST", "/v1/admin/runtimes", {"name": "x", "cli": "vim", "cli_version": "1"}),
            ("POST", "/v1/admin/runtimes", {"name": "x", "cli": "claude", "cli_version": 1}),
            ("POST", "/v1/admin/runtimes", {"name": "x", "cli": "claude", "cli_version": "1" * 65}),
            ("POST", "/v1/admin/runtimes", {"name": "Ü", "cli": "claude", "cli_version": "1"}),
            ("POST", "/v1/admin/runtimes", {"name": "a" * 64, "cli": "claude", "cli_version": "1"}),
            (
                "POST",
                "/v1/admin/runtimes",
                {
                    "name": "priced",
                    "cli": "claude",
                    "cli_version": "1",
                    "prices": {"input": 1e308, "cache_read": 0, "cache_write": 0, "output": 0},
                },
            ),
            ("PATCH", "/v1/admin/runtimes/rt", {"cli_version": None}),
            ("PATCH", "/v1/admin/runtimes/rt", {"limits": {"job_timeout_s": -1}}),
            ("PATCH", "/v1/admin/runtimes/rt", {"limits": {"cpu": "two"}}),
            ("PATCH", "/v1/admin/runtimes/rt", {"limits": {"cpu": "0"}}),
            ("PATCH", "/v1/admin/runtimes/rt", {"limits": {"memory": "2GB"}}),
            ("PATCH", "/v1/admin/runtimes/rt", {"limits": {"memory": 4096}}),
            ("PATCH", "/v1/admin/runtimes/rt", {"limits": {"gpu": "1"}}),
            ("PATCH", "/v1/admin/runtimes/rt", {"image": "vwm harness:1"}),
            ("PATCH", "/v1/admin/runtimes/rt", {"image": "harness;rm -rf /"}),
            ("PATCH", "/v1/admin/workers/wk", {"auto_learning": 0}),
            ("PATCH", "/v1/admin/workers/wk", {"timeouts": {"idle_s": 1e300}}),
            ("PATCH", "/v1/admin/workers/wk", {"instructions": ["a", "list"]}),
            ("PUT", "/v1/admin/settings/global_instructions", {"value": None}),
            ("PUT", "/v1/admin/settings/global_instructions", {"value": "x", "extra": 1}),
            ("POST", "/v1/admin/keys", {"name": "k", "scope": "root"}),
            ("POST", "/v1/sessions", {"worker": "wk", "wait": "yes"}),
            ("POST", "/v1/sessions", {"worker": "wk", "session_repo": "a string"}),
            ("POST", "/v1/prompts", {"session_id": MISSING, "prompt": ""}),
            ("POST", "/v1/prompts", {"session_id": MISSING, "prompt": "x", "mode": "loud"}),
            ("POST", "/v1/prompts", {"session_id": MISSING, "prompt": "x", "timeout_s": 2**62}),
            ("POST", "/v1/prompts", {"session_id": MISSING, "prompt": "x", "timeout_s": 1.5}),
        ]
    ]
    _run(plane, cases)


# -- query parameters -------------------------------------------------------------------------

LISTS = ["/v1/sessions", "/v1/telemetry/requests"]
WINDOWS = ["/v1/telemetry/requests", "/v1/telemetry/summary"]


def test_integers_in_queries_are_plain_ascii_digits(plane):
    cases = [
        Case("GET", path, 400, "invalid_parameter", params=[("limit", raw)])
        for path in LISTS
        for raw in NOT_ASCII_INTEGERS
    ]
    cases += [
        Case("GET", path, 422, "invalid_request", params=[("limit", raw)])
        for path in LISTS
        for raw in ("0", "100000")
    ]
    _run(plane, cases)


def test_times_without_a_zone_are_utc_and_bad_times_get_422(plane):
    cases = [
        Case("GET", path, 422, "invalid_request", params=[(name, raw)])
        for path in WINDOWS
        for name in ("since", "until")
        for raw in BAD_TIMESTAMPS
    ]
    _run(plane, cases)
    with plane.plane.client() as client:
        for path in WINDOWS:
            for raw in GOOD_TIMESTAMPS:
                for name in ("since", "until"):
                    answer = client.get(path, params={name: raw})
                    assert answer.status_code == 200, (path, name, raw, answer.text)
        since = client.get("/v1/telemetry/requests", params={"since": "2025-06-01"}).json()
        assert [row["created_at"] for row in since["items"]] == ["2025-06-01T01:00:00Z"]
        until = client.get("/v1/telemetry/requests", params={"until": "2025-06-01T00:00"}).json()
        assert [row["created_at"] for row in until["items"]] == ["2025-05-31T23:00:00Z"]
        moved = client.get("/v1/telemetry/summary", params={"since": "2025-06-01T02:00+02:00"})
        assert [row["jobs"] for row in moved.json()["items"]] == [1]


def test_control_characters_repeats_lengths_and_unknown_values_in_queries(plane):
    bad = "invalid_parameter"
    cases = [
        Case("GET", path, 400, bad, params=[(name, f"a{char}b")], details={"parameter": name})
        for path, name in [
            ("/v1/sessions", "worker"),
            ("/v1/sessions", "status"),
            ("/v1/sessions", "cursor"),
            ("/v1/telemetry/requests", "session_id"),
            ("/v1/telemetry/requests", "since"),
            ("/v1/telemetry/summary", "group_by"),
        ]
        for char in CONTROL_CHARACTERS
    ]
    cases += [
        Case(
            "GET",
            path,
            400,
            bad,
            params=[(name, one), (name, other)],
            details={"reason": "repeated"},
        )
        for path, name, one, other in [
            ("/v1/sessions", "limit", "1", "2"),
            ("/v1/sessions", "worker", "wk", "wk"),
            ("/v1/telemetry/requests", "since", "2025-06-01", "2025-07-01"),
            ("/v1/telemetry/summary", "group_by", "worker", "session"),
            (f"/v1/sessions/{MISSING}/files", "path", "a", "b"),
            (f"/v1/jobs/{MISSING}/events", "after", "1", "2"),
        ]
    ]
    cases += [
        Case("GET", "/v1/sessions", 400, bad, params=[("worker", "w" * 9000)], details={"reason": "too_long"}),
        Case("GET", "/v1/sessions", 400, bad, params=[("w" * 300, "1")], details={"reason": "too_long"}),
        Case("GET", "/v1/sessions", 422, "invalid_request", params=[("worker", "w" * 101)]),
        Case("GET", "/v1/sessions", 422, "invalid_request", params=[("cursor", "c" * 501)]),
        Case("GET", "/v1/sessions", 422, "invalid_request", params=[("status", "sleeping")]),
        Case("GET", "/v1/sessions", 422, "invalid_request", params=[("surprise", "1")]),
        Case("GET", "/v1/telemetry/summary", 422, "invalid_request", params=[("group_by", "planet")]),
        Case("GET", "/v1/telemetry/requests", 422, "invalid_request", params=[("include_raw", "maybe")]),
        Case("DELETE", f"/v1/sessions/{MISSING}/files", 422, "invalid_request", params=[("path", "a"), ("recursive", "maybe")]),
        # a file path is the harness's path policy's to judge: relayed, so 404 for no session
        Case("GET", f"/v1/sessions/{MISSING}/files", 404, "not_found", params=[("path", "a\x00b")]),
    ]  # fmt: skip
    _run(plane, cases)


def _cursor(*parts: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(parts)).encode()).decode().rstrip("=")


def test_cursors_this_api_did_not_issue_get_400(plane):
    cursors = [
        "٣",
        "not-a-cursor",
        "",
        "====",
        _cursor("2025-01-01T00:00:00", "abc"),  # naive
        _cursor("2025-01-01T00:00:00+00:00", "a\x00b"),
        _cursor("2025-01-01T00:00:00+00:00", "٣"),
        _cursor("0001-01-01T00:00:00+01:00", "abc"),  # before year 1 in UTC
        _cursor("2025-01-01T00:00:00+00:00", 5),
        _cursor("2025-01-01T00:00:00+00:00"),
        _cursor(1, "abc"),
        base64.urlsafe_b64encode(b"[" * 300).decode(),
    ]
    _run(
        plane,
        [
            Case("GET", "/v1/sessions", 400, "invalid_cursor", params=[("cursor", c)])
            for c in cursors
        ],
    )


# -- URL paths and headers --------------------------------------------------------------------

PATH_ROUTES = [
    ("GET", "/v1/sessions/{}"),
    ("DELETE", "/v1/sessions/{}"),
    ("GET", "/v1/sessions/{}/files"),
    ("GET", "/v1/jobs/{}"),
    ("GET", "/v1/jobs/{}/events"),
    ("POST", "/v1/jobs/{}/cancel"),
    ("GET", "/v1/admin/runtimes/{}"),
    ("DELETE", "/v1/admin/runtimes/{}"),
    ("PATCH", "/v1/admin/workers/{}"),
    ("PUT", "/v1/admin/settings/{}"),
]


def test_ids_and_names_in_the_path_are_printable_ascii(plane):
    cases = [
        Case(
            method,
            route.format(segment),
            400,
            "invalid_parameter",
            content=b'{"value": 1}' if method in ("PUT", "PATCH") else None,
            details={"reason": reason},
        )
        for method, route in PATH_ROUTES
        for segment, reason in BAD_SEGMENTS
    ]
    # a setting key must fit its column (100 characters) and be a plain name
    cases += [
        Case("PUT", f"/v1/admin/settings/{key}", 400, "invalid_parameter", content=b'{"value": 1}')
        for key in ("k" * 101, "-leading-dash", "a:b", "a~b")
    ]
    _run(plane, cases)


def test_resume_points_are_ascii_sequence_numbers(plane):
    events = f"/v1/jobs/{plane.job_id}/events"
    bad = "invalid_parameter"
    cases = [
        Case("GET", events, 400, bad, headers={"Last-Event-ID": raw.encode()}, details={"parameter": "Last-Event-ID"})
        for raw in NOT_ASCII_INTEGERS
        if raw.strip() == raw  # HTTP itself strips the spaces around a header value
    ] + [
        Case("GET", events, 400, bad, params=[("after", raw)], details={"parameter": "after"})
        for raw in NOT_ASCII_INTEGERS
    ] + [
        # raw bytes that are not UTF-8 either
        Case("GET", events, 400, bad, headers={"Last-Event-ID": b"\xff\xfe"}),
        Case("GET", events, 400, bad, headers={"Last-Event-ID": b"1\t2"}),
    ]  # fmt: skip
    _run(plane, cases)
    with plane.plane.client() as client:  # the job is recorded: a good resume point replays
        for headers, params in [({"Last-Event-ID": "0"}, None), ({}, {"after": "0"}), ({}, None)]:
            answer = client.get(events, headers=headers, params=params)
            assert answer.status_code == 200, answer.text
            assert answer.headers["content-type"].startswith("text/event-stream")


RAW_REQUESTS = [
    # (what, request line and headers after the Authorization header, status)
    *[
        (f"control character {char!r} in a header", b"Last-Event-ID: 1" + char + b"\r\n", 400)
        for char in (b"\x00", b"\x01", b"\x1b", b"\x7f")
    ],
    ("non-ASCII Content-Length", b"Content-Length: \xd9\xa3\r\n", 400),
    ("Content-Length past 64 bits", b"Content-Length: " + b"9" * 30 + b"\r\n", 400),
    ("Last-Event-ID of 10,000 digits", b"Last-Event-ID: " + b"1" * 10_000 + b"\r\n", 400),
    ("an unknown 70 kB header, ignored", b"X-Big: " + b"a" * 70_000 + b"\r\n", 200),
]


@pytest.mark.parametrize(
    ("what", "headers", "status"), RAW_REQUESTS, ids=[r[0] for r in RAW_REQUESTS]
)
def test_raw_requests_below_the_http_client(plane, what, headers, status):
    """What no HTTP client sends: the server's parser (or the app) refuses it, never a 500."""
    url = httpx.URL(plane.plane.url)
    request = (
        f"GET /v1/jobs/{plane.job_id}/events HTTP/1.1\r\nHost: {url.host}\r\n"
        f"Authorization: Bearer {plane.plane.admin_key}\r\n".encode()
        + headers
        + b"Connection: close\r\n\r\n"
    )
    with socket.create_connection((url.host, url.port), timeout=10) as sock:
        sock.sendall(request)
        status_line = sock.recv(4096).split(b"\r\n", 1)[0]
    assert status_line.split()[1] == str(status).encode(), (what, status_line)


def test_raw_request_targets_no_client_would_send(plane):
    url = httpx.URL(plane.plane.url)
    auth = f"Host: {url.host}\r\nAuthorization: Bearer {plane.plane.admin_key}\r\n".encode()
    for target in (
        b"/v1/sessions/" + b"a" * 100_000,
        b"/v1/se\xd9\xa3ssions",
        b"/v1/sessions?worker=" + b"w" * 20_000,
        b"/v1/sessions?limit=\xd9\xa3",
    ):
        with socket.create_connection((url.host, url.port), timeout=10) as sock:
            sock.sendall(b"GET " + target + b" HTTP/1.1\r\n" + auth + b"Connection: close\r\n\r\n")
            status_line = sock.recv(4096).split(b"\r\n", 1)[0]
        assert status_line.split()[1] == b"400", (target[:40], status_line)


def test_hostile_api_keys_get_401(plane):
    with httpx.Client(base_url=plane.plane.url, timeout=10) as client:
        for value in [
            "Bearer " + "٣" * 50,
            "Bearer vwm_" + "a" * 5000 + "_b",
            "Bearer vwm__",
            "Bearer vwm_%00_x",
            "Bearer vwm_\u00e9\u00e9_x",
            "Bearer vwm_a_b c d",
            "bearer",
        ]:
            answer = client.get("/v1/sessions", headers={"Authorization": value.encode()})
            assert answer.status_code == 401, (value[:40], answer.text)
            assert answer.json()["error"]["code"] == "unauthorized"


# -- the documented command -------------------------------------------------------------------


def test_vwm_telemetry_since_a_date_works_end_to_end(plane):
    env = {**os.environ, "VWM_URL": plane.plane.url, "VWM_API_KEY": plane.plane.admin_key or ""}
    for args, jobs in [
        (["telemetry", "--since", "2025-06-01", "--json"], 1),
        (["telemetry", "--until", "2025-06-01", "--json"], 1),
        (["telemetry", "--since", "2025-05-31", "--json"], 2),
        (["telemetry", "--summary", "--since", "2025-06-01", "--json"], None),
    ]:
        done = subprocess.run(
            [sys.executable, "-m", "vwm", *args],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        rows = json.loads(done.stdout)
        if jobs is None:
            assert sum(row["jobs"] for row in rows) == 1
        else:
            assert len(rows) == jobs, rows
    refused = subprocess.run(
        [sys.executable, "-m", "vwm", "telemetry", "--since", "٢٠٢٥-06-01"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 1
    assert "error [invalid_request]" in refused.stderr
    assert "Traceback" not in refused.stderr
