"""``GET /metrics`` of the embedded control plane over real HTTP: behind the API key, requests by
route template and status, sessions and jobs by status from the database, and a job's duration
and tokens under its worker and model; a killed harness's relaunch."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.control_plane.conftest import ControlPlane, kill_harnesses
from tests.e2e.conftest import MODELS, make_bare_repo
from tests.support.control_plane import add_claude_workers

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(plane: ControlPlane) -> Samples:
    with plane.client() as client:
        answer = client.get("/metrics")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_metrics_need_a_key_and_count_requests_by_route_template(control_plane):
    refused = httpx.get(f"{control_plane.url}/metrics")
    assert refused.status_code == 401
    assert "vwm_http_requests_total" not in refused.text
    before = scrape(control_plane)
    with control_plane.client() as client:
        assert client.get("/v1/sessions/s_nope").status_code == 404
        assert client.get("/v1/sessions/s_other").status_code == 404
    after = scrape(control_plane)

    route = {"method": "GET", "route": "/v1/sessions/{session_id}"}
    moved = value(after, "vwm_http_requests_total", **route, status="404") - value(
        before, "vwm_http_requests_total", **route, status="404"
    )
    assert moved == 2
    assert value(after, "vwm_http_request_duration_seconds_count", **route) >= 2
    assert value(after, "vwm_http_requests_total", method="GET", route="/metrics", status="401")
    assert not any("s_nope" in dict(labels).get("route", "") for _, labels in after)
    # Every status is there from the start, at 0 on an empty database.
    assert value(after, "vwm_sessions", status="ready") == 0
    assert value(after, "vwm_jobs", status="succeeded") == 0


@pytest.mark.cli
def test_sessions_jobs_tokens_and_restarts(tmp_path, control_plane, fake_provider):
    repo = make_bare_repo(tmp_path / "worker.git", {"README.md": "# knowledge\n"})
    with control_plane.client() as client:
        add_claude_workers(client, fake_provider.base_url, repo)
        sid = client.post("/v1/sessions", json={"worker": "w"}).json()["id"]
        job = client.post("/v1/prompts", json={"session_id": sid, "prompt": "say hi"}).json()
        assert job["status"] == "succeeded", (job, control_plane.log()[-3000:])
        [record] = client.get("/v1/telemetry/requests", params={"session_id": sid}).json()["items"]
    samples = scrape(control_plane)

    assert value(samples, "vwm_sessions", status="ready") == 1
    assert value(samples, "vwm_jobs", status="succeeded") == 1
    assert value(samples, "vwm_job_duration_seconds_count", status="succeeded") == 1
    model = MODELS["claude"]
    assert record["model"] == model
    for kind in ("input", "output"):
        tokens = value(samples, "vwm_tokens_total", worker="w", model=model, kind=kind)
        assert tokens == record["tokens"][kind] > 0, kind
    restarts = value(samples, "vwm_harness_restarts_total")

    # The session's harness dies: the next prompt relaunches it.
    kill_harnesses(control_plane.data_dir)
    with control_plane.client() as client:
        again = client.post("/v1/prompts", json={"session_id": sid, "prompt": "say hi"}).json()
    assert again["status"] == "succeeded", again
    samples = scrape(control_plane)
    assert value(samples, "vwm_harness_restarts_total") == restarts + 1
    assert value(samples, "vwm_jobs", status="succeeded") == 2
