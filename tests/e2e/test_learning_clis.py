"""Auto-learning's harness side with each real CLI, against the fake provider and real git.

A session's job writes a note into ``../worker_repo/knowledge/`` with the CLI's own tool (the
fake model's ``write NAME`` trigger, NAME beside the working directory), the learning commit
pushes it to the worker repository with its provenance, and the session ends. The next session
of the worker, in a new workspace, finds the note listed in its instruction file, and its CLI
puts that list before the model.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from fake_provider.script import FILE_CONTENT, DefaultScript, ModelRequest, Reply
from fake_provider.testing import RunningProvider, serve_in_thread
from harness.adapters import get_adapter
from tests.e2e.conftest import CLIS, bootstrap_body, git, harness_env, start_harness

pytestmark = pytest.mark.cli

NOTE = "../worker_repo/knowledge/lessons.md"
LISTED = "worker_repo/knowledge/lessons.md"  # as the instruction file names it


class RememberingScript(DefaultScript):
    """The default script, keeping the text of every agent turn it was asked to answer."""

    def __init__(self) -> None:
        self.turns: list[str] = []

    def reply(self, request: ModelRequest) -> Reply:
        if request.tools:
            self.turns.append(request.context)
        answer = super().reply(request)
        assert isinstance(answer, Reply)
        return answer


@pytest.fixture(scope="module")
def provider() -> Iterator[tuple[RunningProvider, RememberingScript]]:
    script = RememberingScript()
    with serve_in_thread(script) as running:
        yield running, script


@pytest.mark.parametrize("cli", CLIS)
def test_a_note_written_beside_the_task_is_learned_and_offered_next_session(
    cli, tmp_path, provider, repos
):
    running, script = provider
    env = harness_env(cli, running.base_url, VWM_SESSION_ID=f"sess-{cli}-1")
    first = start_harness(tmp_path, cli, env, name="first")
    try:
        with first.client() as client:
            assert client.post("/v1/bootstrap", json=bootstrap_body(repos)).status_code == 200
            job = client.post("/v1/jobs", json={"prompt": f"write {NOTE}"}).json()
            assert job["status"] == "succeeded", (job, first.log())
            assert job["summary"]["final_text"] == f"done: wrote {NOTE}"
            note = first.workspace / "worker_repo" / "knowledge" / "lessons.md"
            assert note.read_text() == FILE_CONTENT
            assert not (first.workspace / "session_repo" / "knowledge").exists()

            learned = client.post(
                "/v1/learning/commit",
                json={
                    "mode": "direct",
                    "session_id": f"sess-{cli}-1",
                    "job_id": job["job_id"],
                    "worker": "billing-bot",
                    "instructions_version": 1,
                    "worker_revision": 1,
                    "prompt_version": 0,
                    "summary": "Recorded lessons.md.",
                },
            )
            assert learned.status_code == 200, learned.text
            outcome = learned.json()
            assert outcome["status"] == "recorded" and outcome["pushed"] is True, outcome
            assert outcome["files_changed"] == ["knowledge/lessons.md"]
            assert client.post("/v1/shutdown").status_code == 200
    finally:
        first.stop()

    bare = str(repos["worker"])
    assert git("--git-dir", bare, "show", "main:knowledge/lessons.md") + "\n" == FILE_CONTENT
    message = git("--git-dir", bare, "log", "-1", "--format=%B", "main")
    parsed = subprocess.run(
        ["git", "interpret-trailers", "--parse"], input=message, text=True, capture_output=True
    ).stdout
    assert f"VWM-Session: sess-{cli}-1" in parsed and f"VWM-Job: {job['job_id']}" in parsed

    env = harness_env(cli, running.base_url, VWM_SESSION_ID=f"sess-{cli}-2")
    second = start_harness(tmp_path, cli, env, name="second")
    try:
        with second.client() as client:
            assert client.post("/v1/bootstrap", json=bootstrap_body(repos)).status_code == 200
            instructions = second.workspace / get_adapter(cli).instruction_file_name
            assert f"- `{LISTED}`" in instructions.read_text()
            seen = len(script.turns)
            job = client.post("/v1/jobs", json={"prompt": "say hello"}).json()
            assert job["status"] == "succeeded", (job, second.log())
    finally:
        second.stop()
    turns = script.turns[seen:]
    assert turns and all(LISTED in turn for turn in turns), [turn[-3000:] for turn in turns]
