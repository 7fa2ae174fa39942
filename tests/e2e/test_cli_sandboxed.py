"""Each real CLI inside the bubblewrap sandbox (``VWM_SANDBOX=bwrap``), against the fake provider:
it still writes a file with its own tool, and a second prompt resumes its session (its state in
``.cli-home`` survives the sandbox). What the sandbox keeps out is proved in
tests/harness/test_sandbox.py; this proves the profile leaves each CLI everything it needs.
"""

from __future__ import annotations

import shutil
import uuid

import pytest

from eventing.bwrap import probe as probe_bwrap
from tests.e2e.conftest import CLIS, bootstrap_body, harness_env, start_harness

pytestmark = pytest.mark.cli


@pytest.mark.parametrize("cli", CLIS)
def test_the_cli_runs_a_prompt_end_to_end_in_the_sandbox(cli, tmp_path, fake_provider, repos):
    bwrap = shutil.which("bwrap") or "bwrap"
    if (problem := probe_bwrap(bwrap)) is not None:
        pytest.fail(f"bubblewrap does not work here ({problem}); install it (.ci/run does)")
    key = f"key-{uuid.uuid4().hex[:8]}"
    env = harness_env(cli, fake_provider.base_url, key, VWM_SANDBOX="bwrap")
    harness = start_harness(tmp_path, cli, env)
    try:
        with harness.client() as client:
            assert client.get("/healthz").json()["sandbox"] == "bwrap"
            assert client.post("/v1/bootstrap", json=bootstrap_body(repos)).status_code == 200
            first = client.post("/v1/jobs", json={"prompt": "write hello.txt"}).json()
            assert first["status"] == "succeeded", (first, harness.log())
            assert first["summary"]["final_text"] == "done: wrote hello.txt"
            written = harness.workspace / "session_repo" / "hello.txt"
            assert written.read_text() == "hello from fake model\n"

            second = client.post("/v1/jobs", json={"prompt": "say hello again"}).json()
            assert second["status"] == "succeeded", (second, harness.log())
            assert second["summary"]["cli_session_id"] == first["summary"]["cli_session_id"]
            assert second["summary"]["final_text"] == "hello from fake model"
    finally:
        harness.stop()
