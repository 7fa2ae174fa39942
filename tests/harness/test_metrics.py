"""``GET /metrics`` of a real harness over real HTTP: requests by route template and status, and,
after a job of a real CLI on the fake provider, its end and its metered model calls."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import MODELS, bootstrap_body, harness_env, make_bare_repo, start_harness
from tests.support.harness_process import HarnessProcess


def scrape(harness: HarnessProcess) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample, by name and labels; scraped without the session token (it is public)."""
    answer = httpx.get(f"{harness.url}/metrics", timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def fake_provider():
    from fake_provider.testing import serve_in_thread

    with serve_in_thread() as provider:
        yield provider


@pytest.fixture
def harness(tmp_path: Path, fake_provider):
    running = start_harness(tmp_path, "claude", harness_env("claude", fake_provider.base_url))
    yield running
    running.stop()


def test_requests_count_by_route_template_and_status(harness: HarnessProcess) -> None:
    before = scrape(harness)
    assert httpx.get(f"{harness.url}/v1/jobs/job_nope").status_code == 401  # no token
    with harness.client() as client:
        assert client.get("/v1/jobs/job_nope").status_code == 404
        assert client.get("/v1/jobs/job_other").status_code == 404
        assert client.get("/no/such/path").status_code == 404
    after = scrape(harness)

    route = "/v1/jobs/{job_id}"
    for status, expected in (("404", 2), ("401", 1)):
        moved = value(
            after, "vwm_http_requests_total", method="GET", route=route, status=status
        ) - value(before, "vwm_http_requests_total", method="GET", route=route, status=status)
        assert moved == expected, status
    assert (
        value(after, "vwm_http_request_duration_seconds_count", method="GET", route=route)
        - value(before, "vwm_http_request_duration_seconds_count", method="GET", route=route)
        == 3
    )
    unmatched = {"method": "GET", "route": "unmatched", "status": "404"}
    assert value(after, "vwm_http_requests_total", **unmatched) == 1
    # Never the raw path: ids would make a series each.
    assert not any("job_nope" in dict(labels).get("route", "") for _, labels in after)
    # The first scrape counts itself once it has answered.
    assert value(after, "vwm_http_requests_total", method="GET", route="/metrics", status="200")


@pytest.mark.cli
def test_a_job_counts_its_end_and_its_model_calls(harness: HarnessProcess, tmp_path: Path) -> None:
    repos = {
        "worker": make_bare_repo(tmp_path / "worker.git", {"README.md": "# worker\n"}),
        "session": make_bare_repo(tmp_path / "session.git", {"README.md": "# task\n"}),
    }
    with harness.client() as client:
        assert client.post("/v1/bootstrap", json=bootstrap_body(repos)).status_code == 200
        job = client.post("/v1/jobs", json={"prompt": "say hi"}).json()
    assert job["status"] == "succeeded", (job, harness.log())
    samples = scrape(harness)

    assert value(samples, "vwm_harness_jobs_finished_total", status="succeeded") == 1
    assert value(samples, "vwm_harness_job_duration_seconds_count", status="succeeded") == 1
    calls = {
        dict(labels)["model"]: count
        for (name, labels), count in samples.items()
        if name == "vwm_harness_model_calls_total" and dict(labels)["outcome"] == "ok"
    }
    assert calls.get(MODELS["claude"], 0) >= 1, samples
    output = sum(
        count
        for (name, labels), count in samples.items()
        if name == "vwm_harness_model_tokens_total" and dict(labels)["kind"] == "output"
    )
    summary = job["summary"]["usage"]
    assert output == summary["output"] > 0  # what the meter saw is what the job reports
