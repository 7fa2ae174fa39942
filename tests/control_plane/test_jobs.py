"""Jobs through the control plane with a real CLI: one at a time per session (409), cancel
mid-run, and a cancelled job's record."""

from __future__ import annotations

import time

import pytest

from tests.e2e.conftest import make_bare_repo
from tests.support.control_plane import add_claude_workers
from tests.support.sse import iter_sse

pytestmark = pytest.mark.cli


def test_busy_session_then_cancel(tmp_path, control_plane, fake_provider):
    repo = make_bare_repo(tmp_path / "worker.git", {"README.md": "# knowledge\n"})
    with control_plane.client() as client:
        add_claude_workers(client, fake_provider.base_url, repo)
        sid = client.post("/v1/sessions", json={"worker": "w"}).json()["id"]

        slow = client.post(
            "/v1/prompts", json={"session_id": sid, "prompt": "sleep 60", "mode": "async"}
        )
        assert slow.status_code == 202
        job_id = slow.json()["id"]
        busy = client.post("/v1/prompts", json={"session_id": sid, "prompt": "say hi"})
        assert busy.status_code == 409
        assert busy.json()["error"]["code"] == "session_busy"

        with client.stream("GET", f"/v1/jobs/{job_id}/events") as stream:
            for event in iter_sse(stream):
                if event.event == "text_delta":
                    break  # the model is answering, slowly
        started = time.monotonic()
        cancelled = client.post(f"/v1/jobs/{job_id}/cancel")
        assert cancelled.status_code == 200
        assert cancelled.json()["status"] == "cancelled"
        assert time.monotonic() - started < 15
        assert cancelled.json()["error"]["code"] == "cancelled"
        record = client.get("/v1/telemetry/requests", params={"session_id": sid}).json()["items"]
        assert [r["status"] for r in record] == ["cancelled"]

        after = client.post("/v1/prompts", json={"session_id": sid, "prompt": "say hi"}).json()
        assert after["status"] == "succeeded", after
