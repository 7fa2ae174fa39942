"""End to end with each real CLI: harness process, real git, the fake model provider over HTTP.

One scenario per CLI, in order: bootstrap two bare repos; a prompt makes the CLI write a file with
its own tool (streamed); usage equals what the provider reported; a second prompt resumes the same
CLI session; a harness restart keeps it; shutdown pushes a commit the bare repo shows.
"""

from __future__ import annotations

import uuid

import pytest

from tests.e2e.conftest import CLIS, bootstrap_body, git, harness_env, start_harness
from tests.support.sse import iter_sse

pytestmark = pytest.mark.cli

USAGE_FIELDS = ("input", "cache_read", "cache_write", "output", "reasoning")


def counted_since(provider, key: str, after_seq: int) -> dict[str, int]:
    """What the CLI reports itself: its turns (tools offered), not its side calls."""
    entries = [e for e in provider.ledger.entries(key=key) if e.counted and e.seq > after_seq]
    return {name: sum(getattr(e.usage, name) for e in entries) for name in USAGE_FIELDS}


def billed_since(provider, key: str, after_seq: int) -> list[dict[str, int]]:
    """The usage of every model call the provider served, side calls included, in order."""
    return [e.usage.as_dict() for e in provider.ledger.model_calls(key=key) if e.seq > after_seq]


def total(usages: list[dict[str, int]]) -> dict[str, int]:
    return {name: sum(usage[name] for usage in usages) for name in USAGE_FIELDS}


def assert_metered(summary: dict, calls: list[dict], provider, key: str, mark: int) -> None:
    """The job's usage is the provider's bill, call by call; the CLI's own report beside it."""
    billed = billed_since(provider, key, mark)
    assert sorted(map(str, (c["usage"] for c in calls))) == sorted(map(str, billed))
    assert summary["usage"] == total(billed)
    assert summary["usage_source"] == "metered"
    assert summary["cli_usage"] == counted_since(provider, key, mark)
    assert summary["usage_mismatch"] == (summary["usage"] != summary["cli_usage"])


def last_seq(provider) -> int:
    entries = provider.ledger.entries()
    return entries[-1].seq if entries else 0


@pytest.mark.parametrize("cli", CLIS)
def test_prompt_tool_write_resume_restart_and_shutdown(cli, tmp_path, fake_provider, repos):
    key = f"key-{uuid.uuid4().hex[:8]}"
    env = harness_env(cli, fake_provider.base_url, key)
    harness = start_harness(tmp_path, cli, env)
    try:
        with harness.client() as client:
            boot = client.post("/v1/bootstrap", json=bootstrap_body(repos))
            assert boot.status_code == 200, boot.text
            assert (harness.workspace / "session_repo" / "README.md").exists()
            assert (harness.workspace / "worker_repo" / "README.md").exists()

            mark = last_seq(fake_provider)
            with client.stream(
                "POST", "/v1/jobs", json={"prompt": "write hello.txt", "mode": "stream"}
            ) as response:
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                events = list(iter_sse(response))
            kinds = [e.event for e in events]
            assert kinds[0] == "job_started" and kinds[-1] == "job_finished", kinds
            for needed in ("session_started", "tool_call", "result"):
                assert needed in kinds, (needed, kinds)
            assert [int(e.id) for e in events] == list(range(1, len(events) + 1))
            finished = events[-1].json["data"]
            assert finished["status"] == "succeeded", (finished, harness.log())
            summary = finished["summary"]
            assert summary["final_text"] == "done: wrote hello.txt"
            session_id = summary["cli_session_id"]
            assert session_id
            written = harness.workspace / "session_repo" / "hello.txt"
            assert written.read_text() == "hello from fake model\n"
            calls = [e.json["data"] for e in events if e.event == "model_call"]
            assert calls and all(c["outcome"] == "ok" for c in calls)
            assert finished["calls"] == calls
            assert_metered(summary, calls, fake_provider, key, mark)
            assert summary["usage"]["output"] > 0

            mark = last_seq(fake_provider)
            second = client.post("/v1/jobs", json={"prompt": "say hello again"})
            assert second.status_code == 200, second.text
            job = second.json()
            assert job["status"] == "succeeded", job
            assert job["summary"]["cli_session_id"] == session_id
            assert job["summary"]["final_text"] == "hello from fake model"
            with client.stream("GET", f"/v1/jobs/{job['job_id']}/events?after=0") as logged:
                calls = [e.json["data"] for e in iter_sse(logged) if e.event == "model_call"]
            assert_metered(job["summary"], calls, fake_provider, key, mark)
            started = client.get(f"/v1/jobs/{job['job_id']}/events?after=0")
            assert f'"resume_id":"{session_id}"' in started.text

        # A restart of the harness on the same volume keeps the CLI session.
        harness.stop()
        harness.start()
        with harness.client() as client:
            again = client.post("/v1/bootstrap", json=bootstrap_body(repos))
            assert again.json()["changed"] == []
            third = client.post("/v1/jobs", json={"prompt": "say hello once more"}).json()
            assert third["status"] == "succeeded", third
            assert third["summary"]["cli_session_id"] == session_id

            done = client.post("/v1/shutdown")
            assert done.status_code == 200, done.text
        pushed = git(
            "--git-dir", str(repos["session"]), "show", "--name-only", "--format=", "main"
        ).splitlines()  # fmt: skip
        assert "hello.txt" in pushed
        [path] = [name for name in pushed if name.endswith("/transcript.jsonl")]
        assert path.startswith(".vwm/sessions/")
        transcript = git("--git-dir", str(repos["session"]), "show", f"main:{path}")
        assert "done: wrote hello.txt" in transcript
    finally:
        harness.stop()
