"""Skills reach the model, with each real CLI: a real harness and CLI against the fake provider.

Two skills go in through ``PUT /v1/skills/{name}``; one is taken out again with ``DELETE``; then one
prompt. The fake provider's ledger (the system prompt and tool descriptions of every model call)
must show the installed skill's name and description, and nothing of the removed one. The skills
folder is the adapter's (docs/adapters.md, "Skills"), so nothing lands in session_repo.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from harness.adapters import get_adapter
from tests.e2e.conftest import CLIS, git, harness_env, start_harness
from tests.support.skill_packages import install_headers, skill_archive

pytestmark = pytest.mark.cli


@pytest.mark.parametrize(
    "cli", [cli for cli in CLIS if get_adapter(cli).skills_dir(Path()) is not None]
)
def test_an_installed_skill_is_offered_to_the_model(cli, tmp_path, fake_provider):
    key = f"key-{uuid.uuid4().hex[:8]}"
    token = uuid.uuid4().hex[:8]
    kept = (f"zebra-check-{token}", f"Counts the stripes on zebras, marker {token}-kept.")
    removed = (f"okapi-check-{token}", f"Measures okapi necks, marker {token}-removed.")
    session_repo = tmp_path / "ws" / "session_repo"
    session_repo.mkdir(parents=True)  # counts as bootstrapped
    git("init", "-q", "-b", "main", str(session_repo))
    harness = start_harness(tmp_path, cli, harness_env(cli, fake_provider.base_url, key))
    try:
        with harness.client() as client:
            for name, description in (kept, removed):
                data = skill_archive(name, "1.0.0", description)
                put = client.put(f"/v1/skills/{name}", content=data, headers=install_headers(data))
                assert put.status_code == 200, put.text
            assert client.delete(f"/v1/skills/{removed[0]}").status_code == 204
            assert [s["name"] for s in client.get("/v1/skills").json()["items"]] == [kept[0]]

            job = client.post("/v1/jobs", json={"prompt": "say hello"}).json()
            assert job["status"] == "succeeded", (job, harness.log())
    finally:
        harness.stop()

    calls = fake_provider.ledger.model_calls(key=key)
    turns = [call for call in calls if call.tools_offered]  # the agent's turns, not titles
    assert turns, calls
    assert all(call.offers(kept[0]) and call.offers(kept[1]) for call in turns), [
        (call.tools_offered, call.system[:2000]) for call in turns
    ]
    assert not any(call.offers(removed[0]) or call.offers(removed[1]) for call in calls)
    assert not list(session_repo.rglob("SKILL.md"))
    assert git("status", "--porcelain", cwd=session_repo) == ""
