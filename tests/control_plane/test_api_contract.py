"""The API over real HTTP without running an agent: auth on every endpoint, bad input on every
endpoint (4xx with a stable code, never a 5xx, nothing half-written), and schemathesis fuzzing
against the served OpenAPI document (which must describe every endpoint accurately)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.control_plane.conftest import ControlPlane, harness_pids, kill_harnesses
from tests.support.postgres import postgres_database


def _operations(document: dict) -> list[tuple[str, str]]:
    return [
        (method.upper(), path.replace("{", "").replace("}", ""))
        for path, item in document["paths"].items()
        for method in item
        if path != "/healthz"
    ]


def test_every_endpoint_refuses_a_missing_or_wrong_key(control_plane):
    document = httpx.get(f"{control_plane.url}/openapi.json").json()
    operations = _operations(document)
    assert len(operations) >= 20
    for method, path in operations:
        for headers in (
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": "Bearer vwm_000000000000_not-the-secret"},
        ):
            response = httpx.request(method, control_plane.url + path, headers=headers)
            assert response.status_code == 401, (method, path, response.text)
            # A meter's charge takes its session's charge token, not an API key (budgets).
            expected = "invalid_charge_token" if path.endswith("/charges") else "unauthorized"
            assert response.json()["error"]["code"] == expected


def test_a_client_key_cannot_reach_admin_endpoints(control_plane):
    with control_plane.client() as admin:
        created = admin.post("/v1/admin/keys", json={"name": "bot", "scope": "client"})
        assert created.status_code == 201
        client_key = created.json()["key"]
    with control_plane.client(client_key) as client:
        assert client.get("/v1/sessions").status_code == 200
        assert client.get("/v1/telemetry/summary").status_code == 200
        for method, path in [
            ("GET", "/v1/admin/runtimes"),
            ("POST", "/v1/admin/keys"),
            ("PUT", "/v1/admin/settings/global_instructions"),
        ]:
            refused = client.request(method, path, json={"name": "x", "scope": "admin"})
            assert refused.status_code == 403, (method, path)
            assert refused.json()["error"]["code"] == "forbidden"
    # keys are stored hashed: the plaintext is nowhere in the database file
    database = control_plane.data_dir / "vwm.sqlite3"
    assert client_key.split("_", 2)[2].encode() not in database.read_bytes()


def test_bad_input_gets_4xx_with_a_code_and_writes_nothing(control_plane):
    with control_plane.client() as client:
        cases = [
            client.post(
                "/v1/admin/runtimes", content=b"{nope", headers={"content-type": "application/json"}
            ),
            client.post("/v1/admin/runtimes", json={"name": "x", "cli": "vim", "cli_version": "1"}),
            client.post(
                "/v1/admin/runtimes", json={"name": "BAD NAME", "cli": "claude", "cli_version": "1"}
            ),
            client.post(
                "/v1/admin/runtimes", json={"name": "ok", "cli": "claude", "cli_version": 1}
            ),
            client.post("/v1/admin/runtimes", json=[1, 2]),
            client.post("/v1/admin/runtimes", content=b"x" * (5 << 20)),
            client.post(
                "/v1/admin/workers", json={"name": "w", "runtime": "missing", "repo_url": "/r"}
            ),
            client.patch("/v1/admin/runtimes/missing", json={"cli_version": "2"}),
            client.put("/v1/admin/settings/global_instructions", json={"value": None}),
            client.post("/v1/sessions", json={"worker": "missing"}),
            client.post("/v1/sessions", json={"worker": "w", "wait": "yes"}),
            client.get("/v1/sessions", params={"limit": "many"}),
            client.get("/v1/sessions", params={"cursor": "not-a-cursor"}),
            client.get("/v1/sessions/missing"),
            client.delete("/v1/sessions/missing"),
            client.post("/v1/prompts", json={"session_id": "missing", "prompt": "hi"}),
            client.post("/v1/prompts", json={"session_id": "s", "prompt": ""}),
            client.post("/v1/prompts", json={"session_id": "s", "prompt": "hi", "mode": "loud"}),
            client.get("/v1/jobs/missing"),
            client.get("/v1/jobs/missing/events", headers={"Last-Event-ID": "x"}),
            client.post("/v1/jobs/missing/cancel"),
            client.get("/v1/telemetry/requests", params={"since": "yesterday"}),
            client.get("/v1/telemetry/summary", params={"group_by": "planet"}),
        ]
        for response in cases:
            assert 400 <= response.status_code < 500, (
                response.request.method,
                response.request.url,
                response.status_code,
                response.text,
            )
            error = response.json()["error"]
            assert error["code"] and error["message"]
        assert cases[5].status_code == 413
        assert client.get("/v1/admin/runtimes").json()["items"] == []
        assert client.get("/v1/admin/workers").json()["items"] == []
        assert client.get("/v1/sessions").json()["items"] == []


def test_schemathesis_finds_no_server_error_or_contract_violation(control_plane, tmp_path):
    _schemathesis(control_plane, tmp_path, max_examples=25)


def test_schemathesis_on_postgresql(tmp_path, fake_provider):
    """The same fuzzing on PostgreSQL, which refuses what SQLite stores (NUL in text, values
    over a column's length): input the edge lets through fails there as a 500. Fewer examples,
    to keep the run short; the headers and query parameters it fuzzes include `Last-Event-ID`."""
    with postgres_database("vwm_contract") as url:
        plane = ControlPlane(tmp_path / "data", {"VWM_DATABASE_URL": url})
        plane.start()
        try:
            _schemathesis(plane, tmp_path, max_examples=10)
        finally:
            plane.stop()
            kill_harnesses(plane.data_dir)


def _schemathesis(control_plane: ControlPlane, tmp_path: Path, max_examples: int) -> None:
    binary = Path(sys.executable).parent / "schemathesis"
    result = subprocess.run(
        [
            str(binary),
            "run",
            f"{control_plane.url}/openapi.json",
            "-H",
            f"Authorization: Bearer {control_plane.admin_key}",
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance,use_after_free",
            "--max-examples",
            str(max_examples),
            "--request-timeout",
            "20",
            # `POST /v1/sessions` with `wait` answers once the harness has started (or failed
            # to): seconds by design, and more than 10 on a loaded 2-core machine (ST112 at the
            # default limit). Slower than the request timeout fails anyway.
            "--max-response-time",
            "20",
            "--seed",
            "1",
            "--report-dir",
            str(tmp_path / "report"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,  # its cache folder goes there, not into the checkout
    )
    assert result.returncode == 0, result.stdout[-6000:]
    # A session started with `wait: false` may still be starting: once every start has ended,
    # the failed ones have left no harness behind.
    deadline = time.monotonic() + 60
    with control_plane.client() as client:
        while client.get("/v1/sessions", params={"status": "provisioning"}).json()["items"]:
            assert time.monotonic() < deadline, "a session start never ended"
            time.sleep(0.2)
    assert harness_pids(control_plane.data_dir) == [], "failed session starts leave no harness"
