"""A budget stops a job mid-run at the right call, with each real CLI, over real HTTP on the
embedded system: the meter refuses the first call that starts after the session's budget is
spent, the CLI gets the refusal in its own API's shape, the job ends `budget_exceeded`, and once
the budget is raised the next prompt runs. Through the control plane's own charge endpoint.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import CLIS, make_bare_repo
from tests.support.control_plane import ControlPlane
from tests.support.workers import add_cli_workers

pytestmark = pytest.mark.cli

# Less than one turn's bill (the fake's turn is 112 tokens): the first call spends it.
LIMIT = 100


def billed(call: dict[str, Any]) -> int:
    usage = call["usage"]
    return usage["input"] + usage["cache_read"] + usage["cache_write"] + usage["output"]


def spent_before(calls: list[dict[str, Any]], call: dict[str, Any]) -> int:
    """The tokens of the answered calls that had ended (and so were charged) when `call` began."""
    begun = _at(call)
    return sum(
        billed(other)
        for other in calls
        if other["outcome"] == "ok" and _at(other) + other["latency_ms"] / 1000 <= begun
    )


def _at(call: dict[str, Any]) -> float:
    return datetime.fromisoformat(call["started_at"]).timestamp()


@pytest.mark.parametrize("cli", CLIS)
def test_a_budget_stops_a_job_at_the_right_call_and_a_raised_one_lets_the_next_run(
    cli: str, tmp_path: Path, control_plane: ControlPlane, fake_provider: Any
) -> None:
    key = f"budget-{cli}-{uuid.uuid4().hex[:6]}"
    control_plane.env["FAKE_PROVIDER_KEY"] = key
    control_plane.stop()
    control_plane.start()
    repo = make_bare_repo(tmp_path / "kb.git", {"README.md": "# kb\n"})
    with control_plane.client() as client:
        add_cli_workers(client, cli, fake_provider.base_url, repo)
        created = client.post("/v1/sessions", json={"worker": cli, "budget": {"tokens": LIMIT}})
        assert created.status_code in (200, 201), created.text
        sid = created.json()["id"]

        stopped = client.post("/v1/prompts", json={"session_id": sid, "prompt": "write a.txt"})
        job = stopped.json()
        assert job["status"] == "failed", (job, control_plane.log()[-3000:])
        assert job["error"]["code"] == "budget_exceeded", job

        calls = client.get(f"/v1/jobs/{job['id']}/calls").json()["items"]
        refused = [c for c in calls if c["outcome"] == "refused"]
        answered = [c for c in calls if c["outcome"] == "ok"]
        assert len(refused) == 1 and answered, calls
        assert refused[0]["status"] == 429
        # Refused because the budget was spent, and no earlier call was let through after.
        assert spent_before(calls, refused[0]) >= LIMIT
        assert all(spent_before(calls, call) < LIMIT for call in answered)
        # What reached the provider is what the calls say.
        served = fake_provider.ledger.model_calls(key=key)
        assert sum(billed({"usage": e.usage.as_dict()}) for e in served) == sum(
            billed(c) for c in answered
        )

        session = client.get(f"/v1/sessions/{sid}").json()
        assert session["budget"]["state"]["open"] is False, session["budget"]
        assert session["budget"]["used"]["tokens"] == sum(billed(c) for c in answered)

        raised = client.put(f"/v1/sessions/{sid}/budget", json={"tokens": 100_000})
        assert raised.status_code == 200, raised.text
        again = client.post("/v1/prompts", json={"session_id": sid, "prompt": "say hi"}).json()
        assert again["status"] == "succeeded", again


def test_a_prompt_request_is_held_to_the_budget_too(
    tmp_path: Path, control_plane: ControlPlane, fake_provider: Any
) -> None:
    """An async prompt travels as a prompt request (the broker delivers it to the harness, as a
    Trigger does): its job never passes dispatch, and its calls are charged all the same."""
    repo = make_bare_repo(tmp_path / "kb.git", {"README.md": "# kb\n"})
    with control_plane.client() as client:
        add_cli_workers(client, "claude", fake_provider.base_url, repo)
        created = client.post(
            "/v1/sessions", json={"worker": "claude", "budget": {"tokens": LIMIT}}
        )
        sid = created.json()["id"]
        queued = client.post(
            "/v1/prompts", json={"session_id": sid, "prompt": "write a.txt", "mode": "async"}
        )
        assert queued.status_code == 202, queued.text
        job_id = queued.json()["id"]
        with client.stream("GET", f"/v1/jobs/{job_id}/events") as events:
            for _ in events.iter_lines():
                pass
        job = client.get(f"/v1/jobs/{job_id}").json()
        assert job["status"] == "failed", job
        assert job["error"]["code"] == "budget_exceeded", job
        calls = client.get(f"/v1/jobs/{job_id}/calls").json()["items"]
        assert [c["outcome"] for c in calls][-1] == "refused"
        used = client.get(f"/v1/sessions/{sid}").json()["budget"]["used"]["tokens"]
        assert used == sum(billed(c) for c in calls if c["outcome"] == "ok") >= LIMIT
