"""A job start carries a deadline (`not_after`): a harness that reads it late, after its caller
stopped waiting (the harness was stopped, then woken), refuses it and runs nothing. The same
request in time runs, so the refusal is the deadline's doing."""

from __future__ import annotations

import os
import signal
import time
import uuid

import httpx
import pytest

from tests.e2e.conftest import bootstrap_body, harness_env, start_harness

pytestmark = pytest.mark.cli  # the job that is on time runs claude


@pytest.fixture
def harness(tmp_path, fake_provider, repos):
    key = f"deadline-{uuid.uuid4().hex[:8]}"
    env = harness_env("claude", fake_provider.base_url, key, VWM_GIT_ALLOW_LOCAL="1")
    harness = start_harness(tmp_path, "claude", env)
    harness.key = key
    with harness.client() as client:
        boot = client.post("/v1/bootstrap", json=bootstrap_body(repos))
        assert boot.status_code == 200, boot.text
    yield harness
    harness.stop()


def traces_of(harness, job_id: str) -> list[str]:
    """What a job that ran leaves in the workspace: its meta, event log and stdout."""
    return sorted(p.name for p in (harness.workspace / ".vwm" / "jobs").glob(f"{job_id}.*"))


def test_an_expired_job_start_is_refused_and_runs_nothing(harness, fake_provider) -> None:
    with harness.client() as client:
        late = client.post(
            "/v1/jobs", json={"prompt": "say hi", "job_id": "late-1", "not_after": time.time() - 1}
        )
        assert late.status_code == 410, late.text
        assert late.json()["error"]["code"] == "job_expired"
        assert "send it again" in late.json()["error"]["message"]
        assert client.get("/v1/jobs/late-1").status_code == 404
        assert traces_of(harness, "late-1") == []
        assert fake_provider.ledger.model_calls(key=harness.key) == []

        on_time = client.post(
            "/v1/jobs",
            json={"prompt": "say hi", "job_id": "on-time", "not_after": time.time() + 60},
        )
        assert on_time.json()["status"] == "succeeded", on_time.text
        assert traces_of(harness, "on-time")
        assert fake_provider.ledger.model_calls(key=harness.key)


def test_a_stopped_harness_woken_after_the_deadline_does_not_run_the_job(
    harness, fake_provider
) -> None:
    pid = harness.proc.pid
    os.killpg(pid, signal.SIGSTOP)
    try:
        not_after = time.time() + 1.0
        body = {"prompt": "say hi", "job_id": "late-2", "not_after": not_after, "mode": "async"}
        with harness.client() as client, pytest.raises(httpx.ReadTimeout):
            client.post("/v1/jobs", json=body, timeout=0.5)  # the caller gives up
        while time.time() <= not_after + 0.1:
            time.sleep(0.05)
    finally:
        os.killpg(pid, signal.SIGCONT)  # it reads the request now, too late

    deadline = time.monotonic() + 15
    while "refused an expired job start" not in harness.log():
        assert time.monotonic() < deadline, harness.log()
        time.sleep(0.05)
    with harness.client() as client:
        assert client.get("/v1/jobs/late-2").status_code == 404
        assert client.get("/healthz").json()["running_job_id"] is None
    assert traces_of(harness, "late-2") == []
    assert fake_provider.ledger.model_calls(key=harness.key) == []
