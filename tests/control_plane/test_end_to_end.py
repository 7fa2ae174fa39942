"""The whole product over real HTTP on the embedded system, with real CLIs and the fake provider:
runtime and worker with local bare repos, a session, all three prompt modes, a killed harness, a
restarted control plane, the end of the session (the commit is in the bare repo), and telemetry
that equals what the provider reported."""

from __future__ import annotations

import uuid

import pytest

from tests.control_plane.conftest import harness_pids, kill_harnesses
from tests.e2e.conftest import MODELS, git, make_bare_repo
from tests.support.sse import iter_sse
from vwm.local.clis import pinned_version

pytestmark = pytest.mark.cli

USAGE = ("input", "cache_read", "cache_write", "output", "reasoning")


def billed(provider, key: str) -> dict[str, int]:
    """What the provider billed for every model call made with `key`, side calls included."""
    return provider.ledger.billed_usage(key=key).as_dict()


def telemetry_total(client, session_id: str) -> dict[str, int]:
    records = client.get("/v1/telemetry/requests", params={"session_id": session_id}).json()[
        "items"
    ]
    return {name: sum(r["tokens"][name] for r in records) for name in USAGE}


@pytest.mark.parametrize("cli", ["claude", "codex"])
def test_worker_session_prompts_restarts_and_end(
    cli, tmp_path, control_plane, fake_provider, monkeypatch
):
    key = f"cp-{cli}-{uuid.uuid4().hex[:6]}"
    control_plane.env["FAKE_PROVIDER_KEY"] = key  # read at every (re)launch of a harness
    control_plane.stop()
    control_plane.start()
    worker_repo = make_bare_repo(tmp_path / "worker.git", {"README.md": "# knowledge\n"})
    task_repo = make_bare_repo(tmp_path / "task.git", {"README.md": "# task\n"})

    with control_plane.client() as client:
        runtime = client.post(
            "/v1/admin/runtimes",
            json={
                "name": f"{cli}-fake",
                "cli": cli,
                "cli_version": pinned_version(cli),
                "default_model": MODELS[cli],
                "provider_base_url": fake_provider.base_url,
                "credential_ref": "FAKE_PROVIDER_KEY",
            },
        )
        assert runtime.status_code == 201, runtime.text
        assert "test-key" not in runtime.text and key not in runtime.text
        worker = client.post(
            "/v1/admin/workers",
            json={
                "name": "helper",
                "runtime": f"{cli}-fake",
                "repo_url": str(worker_repo),
                "instructions": "Keep answers short.",
            },
        )
        assert worker.status_code == 201, worker.text
        setting = client.put(
            "/v1/admin/settings/global_instructions", json={"value": "Be careful."}
        )
        assert setting.json()["version"] == 1

        created = client.post(
            "/v1/sessions", json={"worker": "helper", "session_repo": {"url": str(task_repo)}}
        )
        assert created.status_code == 201, (created.text, control_plane.log())
        session = created.json()
        assert session["status"] == "ready"
        sid = session["id"]

        # sync
        first = client.post(
            "/v1/prompts", json={"session_id": sid, "prompt": "write hello.txt"}
        ).json()
        assert first["status"] == "succeeded", first
        assert first["result"]["final_text"] == "done: wrote hello.txt"
        cli_session = first["result"]["cli_session_id"]

        # stream
        with client.stream(
            "POST", "/v1/prompts", json={"session_id": sid, "prompt": "say hi", "mode": "stream"}
        ) as response:
            assert response.status_code == 200
            events = list(iter_sse(response))
        kinds = [e.event for e in events]
        assert kinds[0] == "job_started" and kinds[-1] == "job_finished"
        assert events[-1].json["data"]["summary"]["cli_session_id"] == cli_session

        # async, then poll and read its events after the fact
        job = client.post(
            "/v1/prompts", json={"session_id": sid, "prompt": "say hi", "mode": "async"}
        )
        assert job.status_code == 202
        job_id = job.json()["id"]
        replay = list(iter_sse(client.get(f"/v1/jobs/{job_id}/events")))
        assert replay[-1].event == "job_finished"
        assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded"

        # a retried request with the same idempotency key runs once
        body = {"session_id": sid, "prompt": "say hi", "idempotency_key": "retry-1"}
        once = client.post("/v1/prompts", json=body).json()
        twice = client.post("/v1/prompts", json=body).json()
        assert once["id"] == twice["id"]

        # the session's harness dies: the next prompt relaunches it and resumes the CLI session
        kill_harnesses(control_plane.data_dir)
        after_kill = client.post("/v1/prompts", json={"session_id": sid, "prompt": "say hi"}).json()
        assert after_kill["status"] == "succeeded", (after_kill, control_plane.log())
        assert after_kill["result"]["cli_session_id"] == cli_session

    # `vwm up` restarts mid-session: the session is still live and resumes
    control_plane.stop()
    assert harness_pids(control_plane.data_dir), "harnesses outlive the control plane"
    control_plane.start()
    with control_plane.client() as client:
        client.put("/v1/admin/settings/global_instructions", json={"value": "Be very careful."})
        resumed = client.post("/v1/prompts", json={"session_id": sid, "prompt": "say hi"}).json()
        assert resumed["status"] == "succeeded", (resumed, control_plane.log())
        assert resumed["result"]["cli_session_id"] == cli_session
        instructions = (control_plane.data_dir / "sessions" / sid / "workspace").rglob("*.md")
        assert any(
            "Be very careful." in p.read_text()
            for p in instructions
            if p.parent.name == "workspace"
        )

        ended = client.delete(f"/v1/sessions/{sid}")
        assert ended.status_code == 200, ended.text
        assert ended.json()["status"] == "ended"
        refused = client.post("/v1/prompts", json={"session_id": sid, "prompt": "say hi"})
        assert refused.status_code == 409

        records = client.get("/v1/telemetry/requests", params={"session_id": sid}).json()["items"]
        assert len(records) == 6
        # Telemetry is the provider's bill: the sum over every call, each call listed.
        assert telemetry_total(client, sid) == billed(fake_provider, key)
        assert {r["usage_source"] for r in records} == {"metered"}
        calls = [
            call
            for r in records
            for call in client.get(f"/v1/jobs/{r['job_id']}/calls").json()["items"]
        ]
        served = fake_provider.ledger.model_calls(key=key)
        assert sorted(str(c["usage"]) for c in calls) == sorted(
            str(e.usage.as_dict()) for e in served
        )
        assert {c["outcome"] for c in calls} == {"ok"}
        versions = sorted(r["instructions_version"] for r in records)
        assert versions == [1, 1, 1, 1, 1, 2]
        raw = client.get(
            "/v1/telemetry/requests", params={"session_id": sid, "include_raw": "true"}
        ).json()["items"]
        final_line = {"claude": '"type":"result"', "codex": '"type":"turn.completed"'}[cli]
        assert all(final_line in r["raw_output"] for r in raw)  # the CLI's own stdout
        summary = client.get("/v1/telemetry/summary", params={"group_by": "worker"}).json()
        assert summary["items"][0]["jobs"] == 6

        stored = list(iter_sse(client.get(f"/v1/jobs/{first['id']}/events")))
        assert stored[-1].event == "job_finished"  # from the database now: the harness is gone

    pushed = git("--git-dir", str(task_repo), "show", "--stat", "--format=%s", "main")
    assert "hello.txt" in pushed
    assert harness_pids(control_plane.data_dir) == []
