"""Each real CLI against the fake provider, given the provider's URL with its version (``/v1/``):
the harness still points it at the root (nothing is sent to ``/v1/v1/...``, the prompt succeeds),
and the job's summary names the model the provider served: the one the CLI reported (claude and
gemini, without a configured model, so they use their own default) or, for codex and opencode,
which name none in their output, the one the meter read off the provider's answer."""

from __future__ import annotations

import uuid

import pytest

from tests.e2e.conftest import CLIS, MODELS, bootstrap_body, start_harness

pytestmark = pytest.mark.cli

REPORTS_ITS_MODEL = {"claude", "gemini"}


@pytest.mark.parametrize("cli", CLIS)
def test_the_summary_names_the_model_the_provider_served(cli, tmp_path, fake_provider, repos):
    key = f"key-{uuid.uuid4().hex[:8]}"
    env = {
        "VWM_PROVIDER_BASE_URL": fake_provider.base_url + "/v1/",
        "VWM_PROVIDER_API_KEY": key,
    }
    if cli not in REPORTS_ITS_MODEL:  # both need one on a custom provider
        env["VWM_MODEL"] = MODELS[cli]
    harness = start_harness(tmp_path, cli, env)
    try:
        with harness.client() as client:
            boot = client.post("/v1/bootstrap", json=bootstrap_body(repos))
            assert boot.status_code == 200, boot.text
            answer = client.post("/v1/jobs", json={"prompt": "say hello"})
            assert answer.status_code == 200, answer.text
            job = answer.json()
            events = client.get(f"/v1/jobs/{job['job_id']}/events?after=0").text
    finally:
        harness.stop()

    assert job["status"] == "succeeded", (job, harness.log())
    served = fake_provider.ledger.model_calls(key=key)
    assert served, "the CLI reached the provider's root"
    # The model that did the work: the last the provider served (gemini asks a router first).
    assert job["summary"]["model"] == served[-1].model
    if cli not in REPORTS_ITS_MODEL:
        assert {entry.model for entry in served} == {MODELS[cli]}  # the one asked for
    assert '"cli_version"' in events  # job_started says which version ran (unpinned: null)
