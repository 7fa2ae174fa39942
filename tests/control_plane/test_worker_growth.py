"""Workers that grow. A worker that changes while its sessions run, over real HTTP on the embedded system with the
real Claude Code against the fake provider: skills from blob storage reach a running session at
its next prompt (and are offered to the model), removed ones leave it, and a change of the
worker's instructions or model reaches the next prompt too, each job's telemetry naming the
worker revision it ran with. And auto-learning at the end of a session, in both modes, with
its provenance checked in the pushed commit."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import MODELS, git, make_bare_repo
from tests.support.control_plane import ControlPlane
from tests.support.skill_packages import skill_archive
from vwm.local.clis import pinned_version

pytestmark = pytest.mark.cli

CLI = "claude"
ARCHIVE = {"content-type": "application/octet-stream"}


def _start(control_plane: ControlPlane, key: str) -> None:
    control_plane.env["FAKE_PROVIDER_KEY"] = key
    control_plane.stop()
    control_plane.start()


def _runtime_and_worker(
    client: httpx.Client, provider_url: str, worker_repo: Path, **worker: object
) -> None:
    runtime = client.post(
        "/v1/admin/runtimes",
        json={
            "name": "claude-fake",
            "cli": CLI,
            "cli_version": pinned_version(CLI),
            "default_model": MODELS[CLI],
            "provider_base_url": provider_url,
            "credential_ref": "FAKE_PROVIDER_KEY",
        },
    )
    assert runtime.status_code == 201, runtime.text
    created = client.post(
        "/v1/admin/workers",
        json={"name": "grower", "runtime": "claude-fake", "repo_url": str(worker_repo), **worker},
    )
    assert created.status_code == 201, created.text


def _prompt(client: httpx.Client, sid: str, prompt: str = "say hi") -> dict[str, object]:
    job = client.post("/v1/prompts", json={"session_id": sid, "prompt": prompt}).json()
    assert job["status"] == "succeeded", job
    return job


def _last_model_call(provider: object, key: str) -> object:
    entries = [e for e in provider.ledger.entries(key=key) if e.kind == "model" and e.tools_offered]  # type: ignore[attr-defined]
    assert entries
    return entries[-1]


def test_skills_instructions_and_model_reach_a_running_session(
    tmp_path: Path, control_plane: ControlPlane, fake_provider: object
) -> None:
    key = f"grow-{uuid.uuid4().hex[:6]}"
    _start(control_plane, key)
    worker_repo = make_bare_repo(tmp_path / "kb.git", {"README.md": "# kb\n"})
    with control_plane.client() as client:
        lint = skill_archive("lint-rules", "1.0.0", "Checks the house lint rules zqx1.")
        assert client.post("/v1/admin/skills", content=lint, headers=ARCHIVE).status_code == 201
        _runtime_and_worker(
            client,
            fake_provider.base_url,  # type: ignore[attr-defined]
            worker_repo,
            skills=["lint-rules"],
            instructions="Answer in one line.",
        )
        created = client.post("/v1/sessions", json={"worker": "grower"})
        assert created.status_code == 201, (created.text, control_plane.log())
        sid = created.json()["id"]
        workspace = control_plane.data_dir / "sessions" / sid / "workspace"
        skills_dir = workspace / ".cli-home" / ".claude" / "skills"
        assert (skills_dir / "lint-rules" / "SKILL.md").is_file()

        first = _prompt(client, sid)
        call = _last_model_call(fake_provider, key)
        assert call.offers("zqx1")  # type: ignore[attr-defined]

        # A second skill, pinned, and new worker instructions: both at the next prompt.
        fmt = skill_archive("fmt-rules", "2.0.0", "Formats the code zqx2.")
        assert client.post("/v1/admin/skills", content=fmt, headers=ARCHIVE).status_code == 201
        pinned = client.put("/v1/admin/workers/grower/skills/fmt-rules", json={"version": "2.0.0"})
        assert pinned.status_code == 200, pinned.text
        patched = client.patch(
            "/v1/admin/workers/grower", json={"instructions": "Answer in French zqx3."}
        )
        assert patched.status_code == 200, patched.text
        assert not (skills_dir / "fmt-rules").exists()  # not before the next prompt
        second = _prompt(client, sid)
        assert (skills_dir / "fmt-rules" / "SKILL.md").is_file()
        call = _last_model_call(fake_provider, key)
        assert call.offers("zqx2") and call.offers("zqx1")  # type: ignore[attr-defined]
        assert "zqx3" in (workspace / "CLAUDE.md").read_text()

        # Removed from the worker: gone from the session at the next prompt. A new model too.
        assert client.delete("/v1/admin/workers/grower/skills/lint-rules").status_code == 204
        assert (
            client.patch(
                "/v1/admin/workers/grower", json={"model": "claude-sonnet-4-5-20250929"}
            ).status_code
            == 200
        )
        third = _prompt(client, sid)
        assert not (skills_dir / "lint-rules").exists()
        # (The resumed conversation still holds the listing of the earlier turns: the model is
        # not asked to forget it, the CLI just cannot use the skill any more.)
        call = _last_model_call(fake_provider, key)
        assert call.model == "claude-sonnet-4-5-20250929"  # type: ignore[attr-defined]

        records = client.get("/v1/telemetry/requests", params={"session_id": sid}).json()["items"]
        revisions = {r["job_id"]: r["worker_revision"] for r in records}
        assert revisions[first["id"]] < revisions[second["id"]] < revisions[third["id"]]
        models = {r["job_id"]: r["model"] for r in records}
        assert models[third["id"]] == "claude-sonnet-4-5-20250929"
        assert client.delete(f"/v1/sessions/{sid}").json()["status"] == "ended"


def _trailers(bare: Path, ref: str) -> dict[str, str]:
    message = git("log", "-1", "--format=%B", ref, cwd=bare)
    parsed = subprocess.run(
        ["git", "interpret-trailers", "--parse"],
        input=message,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(line.split(": ", 1) for line in parsed.splitlines())


def _published(data_dir: Path, event_type: str) -> list[dict[str, object]]:
    with sqlite3.connect(data_dir / "vwm.sqlite3") as db:
        rows = db.execute("SELECT body FROM broker_events WHERE type = ?", (event_type,)).fetchall()
    return [json.loads(body) for (body,) in rows]


def _session(client: httpx.Client, control_plane: ControlPlane) -> str:
    created = client.post("/v1/sessions", json={"worker": "grower"})
    assert created.status_code == 201, (created.text, control_plane.log())
    return str(created.json()["id"])


def test_auto_learning_direct_then_review_then_nothing_then_failed(
    tmp_path: Path, control_plane: ControlPlane, fake_provider: object
) -> None:
    key = f"learn-{uuid.uuid4().hex[:6]}"
    _start(control_plane, key)
    kb = make_bare_repo(tmp_path / "kb.git", {"README.md": "# kb\n"})
    with control_plane.client() as client:
        _runtime_and_worker(
            client,
            fake_provider.base_url,  # type: ignore[attr-defined]
            kb,
            auto_learning=True,
        )
        prompt = "write ../worker_repo/knowledge/lessons.md"
        assert (
            client.put("/v1/admin/settings/learning_prompt", json={"value": prompt}).json()[
                "version"
            ]
            == 1
        )

        # direct: the note is committed on main with its provenance, and pushed
        first = _session(client, control_plane)
        _prompt(client, first)
        ended = client.delete(f"/v1/sessions/{first}")
        assert ended.json()["status"] == "ended", ended.text
        (record,) = client.get("/v1/telemetry/learnings", params={"session_id": first}).json()[
            "items"
        ]
        assert (record["status"], record["mode"], record["branch"]) == (
            "recorded",
            "direct",
            "main",
        )
        assert record["files_changed"] == ["knowledge/lessons.md"]
        assert record["prompt_version"] == 1 and record["tokens"]["output"] > 0
        assert git("rev-parse", "main", cwd=kb) == record["commit"]
        trailers = _trailers(kb, "main")
        assert trailers["VWM-Session"] == first
        assert trailers["VWM-Job"] == record["job_id"]
        assert trailers["VWM-Worker"] == "grower"
        assert trailers["VWM-Learning-Prompt-Version"] == "1"
        assert git("show", "main:knowledge/lessons.md", cwd=kb)
        learning_job = client.get(f"/v1/jobs/{record['job_id']}").json()
        assert learning_job["status"] == "succeeded"

        # the next session is pointed at the knowledge; review mode keeps main as it is
        patched = client.patch("/v1/admin/workers/grower", json={"learning_mode": "review"})
        assert patched.json()["learning_mode"] == "review"
        client.put(
            "/v1/admin/settings/learning_prompt",
            json={"value": "write ../worker_repo/knowledge/review.md"},
        )
        second = _session(client, control_plane)
        workspace = control_plane.data_dir / "sessions" / second / "workspace"
        assert "knowledge/lessons.md" in (workspace / "CLAUDE.md").read_text()
        main_before = git("rev-parse", "main", cwd=kb)
        assert client.delete(f"/v1/sessions/{second}").json()["status"] == "ended"
        (record,) = client.get("/v1/telemetry/learnings", params={"session_id": second}).json()[
            "items"
        ]
        assert (record["status"], record["mode"]) == ("recorded", "review")
        assert record["branch"] == f"learning/{second}"
        assert git("rev-parse", f"learning/{second}", cwd=kb) == record["commit"]
        assert git("rev-parse", "main", cwd=kb) == main_before
        assert _trailers(kb, f"learning/{second}")["VWM-Learning-Prompt-Version"] == "2"

        # the same note again: nothing to record, nothing committed
        client.patch("/v1/admin/workers/grower", json={"learning_mode": "direct"})
        client.put("/v1/admin/settings/learning_prompt", json={"value": prompt})
        third = _session(client, control_plane)
        assert client.delete(f"/v1/sessions/{third}").json()["status"] == "ended"
        (record,) = client.get("/v1/telemetry/learnings", params={"session_id": third}).json()[
            "items"
        ]
        assert (record["status"], record["commit"]) == ("nothing", None)
        assert git("rev-parse", "main", cwd=kb) == main_before

        # a learning job that fails never blocks the end; ?learn=false skips learning
        client.patch("/v1/admin/workers/grower", json={"timeouts": {"job_s": 2}})
        client.put("/v1/admin/settings/learning_prompt", json={"value": "sleep 20"})
        fourth = _session(client, control_plane)
        assert client.delete(f"/v1/sessions/{fourth}").json()["status"] == "ended"
        (record,) = client.get("/v1/telemetry/learnings", params={"session_id": fourth}).json()[
            "items"
        ]
        assert record["status"] == "failed" and record["error"]["code"] == "timeout"
        fifth = _session(client, control_plane)
        skipped = client.delete(f"/v1/sessions/{fifth}", params={"learn": "false"})
        assert skipped.json()["status"] == "ended"
        assert (
            client.get("/v1/telemetry/learnings", params={"session_id": fifth}).json()["items"]
            == []
        )

    events = _published(control_plane.data_dir, "dev.vwm.learning.completed")
    by_session = {e["sessionid"]: e["data"]["status"] for e in events}
    assert by_session == {
        first: "recorded",
        second: "recorded",
        third: "nothing",
        fourth: "failed",
    }
