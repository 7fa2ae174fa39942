"""Failure paths with the real CLIs: bad key, provider down, cancel, timeout, a second job,
an over-long output line, and SSE reconnects. Nothing may hang, and no process may be left behind.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.e2e.conftest import CLIS, bootstrap_body, harness_env, processes_in, start_harness
from tests.support.harness_process import free_port
from tests.support.sse import iter_sse

pytestmark = pytest.mark.cli


def _wait_for_no_processes(directory, timeout: float = 10) -> list[int]:
    """No process of a run left: OpenCode's server stays for the next prompt (its own tests are
    in test_opencode_server.py), the tools it ran must not."""
    deadline = time.monotonic() + timeout
    while (left := processes_in(directory, but_cli_servers=True)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


@pytest.fixture
def booted(tmp_path, repos):
    """Start a bootstrapped harness with the given CLI and env; stops it at the end."""
    started = []

    def boot(cli: str, env: dict[str, str]):
        harness = start_harness(tmp_path, cli, env, name=f"ws{len(started)}")
        started.append(harness)
        with harness.client() as client:
            assert client.post("/v1/bootstrap", json=bootstrap_body(repos)).status_code == 200
        return harness

    yield boot
    for harness in started:
        harness.stop()


# Whatever the CLI would do on its own (claude and gemini retry, codex reconnects for as long
# as its job may run), the meter between it and the provider ends the job at once.
FAIL_FAST_S = 5.0


@pytest.mark.parametrize("cli", CLIS)
def test_a_refused_key_fails_the_job_fast_with_the_providers_message(cli, booted, fake_provider):
    harness = booted(cli, harness_env(cli, fake_provider.base_url, key="bad-key"))
    started = time.monotonic()
    with harness.client() as client:
        job = client.post("/v1/jobs", json={"prompt": "say hello", "timeout_s": 60}).json()
    assert time.monotonic() - started < FAIL_FAST_S, job
    assert job["status"] == "failed", job
    assert job["error"]["code"] == "provider_auth_failed", job
    assert "HTTP 401" in job["error"]["message"], job
    assert _wait_for_no_processes(harness.workspace) == []


@pytest.mark.parametrize("cli", CLIS)
def test_a_provider_that_is_down_fails_the_job_fast(cli, booted):
    down = f"http://127.0.0.1:{free_port()}"
    harness = booted(cli, harness_env(cli, down))
    started = time.monotonic()
    with harness.client() as client:
        job = client.post("/v1/jobs", json={"prompt": "say hello", "timeout_s": 60}).json()
    assert time.monotonic() - started < FAIL_FAST_S, job
    assert job["status"] == "failed", job
    assert job["error"]["code"] == "provider_unreachable", job
    assert down in job["error"]["message"], job
    assert _wait_for_no_processes(harness.workspace) == []


@pytest.mark.parametrize("cli", ["claude", "codex", "opencode"])
def test_cancel_mid_run_and_a_concurrent_job_gets_409(cli, booted, fake_provider):
    harness = booted(cli, harness_env(cli, fake_provider.base_url))
    with harness.client() as client:
        job = client.post("/v1/jobs", json={"prompt": "sleep 60", "mode": "async"})
        assert job.status_code == 202, job.text
        job_id = job.json()["job_id"]
        second = client.post("/v1/jobs", json={"prompt": "say hello"})
        assert second.status_code == 409
        assert second.json()["error"]["code"] == "job_running"
        # Let the CLI get going before cancelling it.
        with client.stream("GET", f"/v1/jobs/{job_id}/events") as stream:
            for event in iter_sse(stream):
                if event.event in ("session_started", "text_delta", "assistant_text"):
                    break
        cancelled = client.post(f"/v1/jobs/{job_id}/cancel").json()
        assert cancelled["status"] == "cancelled"
        assert _wait_for_no_processes(harness.workspace) == []
        # The slot is free again.
        assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "cancelled"
        after = client.post("/v1/jobs", json={"prompt": "say hello"}).json()
        assert after["status"] == "succeeded", (
            after["error"],
            after["summary"],
            harness.log()[-3000:],
        )


def test_wall_clock_timeout_kills_the_run(booted, fake_provider):
    harness = booted("claude", harness_env("claude", fake_provider.base_url))
    with harness.client() as client:
        job = client.post("/v1/jobs", json={"prompt": "sleep 60", "timeout_s": 4}).json()
    assert job["status"] == "timeout"
    assert job["error"]["code"] == "timeout"
    assert _wait_for_no_processes(harness.workspace) == []


def test_over_long_output_line_fails_the_job_and_the_harness_survives(booted, fake_provider):
    env = harness_env("claude", fake_provider.base_url, VWM_MAX_LINE_BYTES="300")
    harness = booted("claude", env)
    with harness.client() as client:
        job = client.post("/v1/jobs", json={"prompt": "say hello"}).json()
        assert job["status"] == "failed"
        assert job["error"]["code"] == "line_too_long"
        assert "VWM_MAX_LINE_BYTES" in job["error"]["message"]
        assert client.get("/healthz").json()["status"] == "ok"
    assert _wait_for_no_processes(harness.workspace) == []


def test_sse_reconnect_with_last_event_id_gets_exactly_the_missed_events(booted, fake_provider):
    harness = booted("claude", harness_env("claude", fake_provider.base_url))
    with harness.client() as client:
        job_id = client.post("/v1/jobs", json={"prompt": "sleep 3", "mode": "async"}).json()[
            "job_id"
        ]
        first: list = []
        with client.stream("GET", f"/v1/jobs/{job_id}/events") as stream:
            for event in iter_sse(stream):
                first.append(event)
                if len(first) == 2:
                    break  # disconnect mid-job
        headers = {"Last-Event-ID": first[-1].id}
        with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers) as stream:
            rest = list(iter_sse(stream))
        assert rest[-1].event == "job_finished"
        full = list(iter_sse(client.get(f"/v1/jobs/{job_id}/events")))
    seen = [int(e.id) for e in first + rest]
    assert seen == list(range(1, len(full) + 1))
    assert [e.data for e in first + rest] == [e.data for e in full]


def test_every_endpoint_but_health_needs_the_token(booted, fake_provider):
    harness = booted("claude", harness_env("claude", fake_provider.base_url))
    calls = [
        ("GET", "/v1/jobs/x"),
        ("POST", "/v1/jobs"),
        ("POST", "/v1/bootstrap"),
        ("GET", "/v1/jobs/x/events"),
        ("POST", "/v1/jobs/x/cancel"),
        ("GET", "/v1/files"),
        ("GET", "/v1/files/content?path=a"),
        ("PUT", "/v1/files/content?path=a"),
        ("DELETE", "/v1/files?path=a"),
        ("POST", "/v1/shutdown"),
    ]
    for method, path in calls:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            response = httpx.request(method, harness.url + path, headers=headers)
            assert response.status_code == 401, (method, path)
            assert response.json()["error"]["code"] == "unauthorized"
    assert httpx.get(harness.url + "/healthz").status_code == 200


BOGUS_SESSION_IDS = {
    "claude": "5580faf0-a152-43f6-96eb-2e0ce991af8a",
    "codex": "01a20c10-9262-77a2-b86e-2bd5c2825e6e",
    "gemini": "cc7aa6b8-841d-42a6-8c5d-19e3edaa6640",
    "opencode": "ses_df3ed255bffeOAfJwZGLD0rwc3",
}


@pytest.mark.parametrize("cli", CLIS)
def test_a_session_the_cli_never_recorded_is_replaced_by_a_new_one(cli, booted, fake_provider):
    harness = booted(cli, harness_env(cli, fake_provider.base_url))
    state_file = harness.workspace / ".vwm" / "state.json"
    state = json.loads(state_file.read_text())
    state["cli_session_id"] = BOGUS_SESSION_IDS[cli]
    state_file.write_text(json.dumps(state))
    with harness.client() as client:
        job = client.post("/v1/jobs", json={"prompt": "say hello"}).json()
        assert job["status"] == "succeeded", job
        new_id = job["summary"]["cli_session_id"]
        assert new_id and new_id != BOGUS_SESSION_IDS[cli]
        events = list(iter_sse(client.get(f"/v1/jobs/{job['job_id']}/events")))
    warnings = [e.json["data"] for e in events if e.event == "error"]
    assert any(w.get("code") == "resume_failed" and w["fatal"] is False for w in warnings)
    assert json.loads(state_file.read_text())["cli_session_id"] == new_id


def test_a_codex_thread_killed_before_it_wrote_anything_is_replaced(booted, fake_provider):
    """A first turn cancelled right after `thread.started` can leave an empty rollout file."""
    harness = booted("codex", harness_env("codex", fake_provider.base_url))
    thread_id = BOGUS_SESSION_IDS["codex"]
    sessions = harness.workspace / ".cli-home" / ".codex" / "sessions" / "2026" / "11" / "25"
    sessions.mkdir(parents=True)
    (sessions / f"rollout-2026-11-25T05-00-00-{thread_id}.jsonl").touch()
    state_file = harness.workspace / ".vwm" / "state.json"
    state = json.loads(state_file.read_text())
    state["cli_session_id"] = thread_id
    state_file.write_text(json.dumps(state))
    with harness.client() as client:
        job = client.post("/v1/jobs", json={"prompt": "say hello"}).json()
    assert job["status"] == "succeeded", job
    assert job["summary"]["cli_session_id"] != thread_id
