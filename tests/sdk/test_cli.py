"""The `vwm` command line against the fake control plane, through Typer's CliRunner."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.sdk.fake_control_plane import ADMIN_KEY, CLIENT_KEY, FakeControlPlane
from vwm.cli import app
from vwm.cli.output import cost_text, usd


@pytest.fixture
def vwm(url: str, monkeypatch: pytest.MonkeyPatch):
    """Run `vwm ARGS...` with the admin key; ``key=`` picks another."""
    monkeypatch.delenv("VWM_URL", raising=False)
    monkeypatch.delenv("VWM_API_KEY", raising=False)
    runner = CliRunner()

    def run(*args: str, key: str | None = ADMIN_KEY, stdin: str | None = None):
        options = ["--url", url] + (["--api-key", key] if key else [])
        return runner.invoke(app, [*options, *args], input=stdin)

    return run


@pytest.fixture
def worker(vwm) -> str:
    assert (
        vwm("runtime", "create", "claude-2", "--cli", "claude", "--cli-version", "2.0.14").exit_code
        == 0
    )
    result = vwm(
        "worker", "create", "reviewer", "--runtime", "claude-2", "--repo-url", "file:///kb.git"
    )
    assert result.exit_code == 0, result.output
    return "reviewer"


@pytest.fixture
def session_id(vwm, worker: str) -> str:
    result = vwm("session", "start", worker)
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


class TestAdmin:
    def test_runtime_commands(self, vwm, fake: FakeControlPlane):
        result = vwm(
            "runtime", "create", "claude-2", "--cli", "claude", "--cli-version", "2.0.14",
            "--prices", '{"input": 3, "output": 15}', "--job-timeout-s", "600",
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["prices"] == {"input": 3, "output": 15}
        assert fake.runtimes["claude-2"]["limits"] == {"job_timeout_s": 600.0}
        listing = vwm("runtime", "list")
        assert "claude-2" in listing.stdout and "2.0.14" in listing.stdout
        assert json.loads(vwm("runtime", "list", "--json").stdout)[0]["name"] == "claude-2"
        assert json.loads(vwm("runtime", "get", "claude-2").stdout)["cli"] == "claude"
        deleted = vwm("runtime", "delete", "claude-2")
        assert (deleted.exit_code, deleted.stderr.strip()) == (0, "deleted runtime claude-2")
        assert vwm("runtime", "list").stderr.strip() == "(no runtimes)"

    def test_worker_with_instructions_from_a_file(
        self, vwm, fake: FakeControlPlane, tmp_path: Path
    ):
        vwm("runtime", "create", "r", "--cli", "codex", "--cli-version", "1")
        (tmp_path / "kb.md").write_text("Review carefully.\n")
        result = vwm(
            "worker", "create", "w", "--runtime", "r", "--repo-url", "u",
            "--instructions-file", str(tmp_path / "kb.md"), "--auto-learning", "--idle-timeout-s", "60",
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        assert fake.workers["w"]["instructions"] == "Review carefully.\n"
        assert fake.workers["w"]["auto_learning"] is True
        assert fake.workers["w"]["timeouts"] == {"idle_s": 60.0}
        assert "w" in vwm("worker", "list").stdout

    def test_settings_from_an_argument_and_a_file(self, vwm, tmp_path: Path):
        set_ = vwm("settings", "set", "global_instructions", "Be brief.")
        assert (set_.exit_code, set_.stderr.strip()) == (0, "set global_instructions (version 1)")
        (tmp_path / "rules.md").write_text("# Rules\nBe kind.\n")
        assert (
            vwm(
                "settings", "set", "global_instructions", "--file", str(tmp_path / "rules.md")
            ).exit_code
            == 0
        )
        assert vwm("settings", "get", "global_instructions").stdout == "# Rules\nBe kind.\n"
        assert vwm("settings", "set", "limit", "42", "--json-value").exit_code == 0
        assert vwm("settings", "get", "limit").stdout.strip() == "42"
        table = vwm("settings", "get")
        assert "global_instructions" in table.stdout and "limit" in table.stdout

    def test_settings_set_needs_exactly_one_value(self, vwm, tmp_path: Path):
        (tmp_path / "x.md").write_text("x")
        assert vwm("settings", "set", "k").exit_code == 2
        assert vwm("settings", "set", "k", "v", "--file", str(tmp_path / "x.md")).exit_code == 2

    def test_key_create_prints_the_key_once(self, vwm, fake: FakeControlPlane):
        result = vwm("key", "create", "ci", "--scope", "client")
        assert result.exit_code == 0
        key = result.stdout.strip()
        assert fake.keys[key] == "client"
        assert "shown only this once" in result.stderr


class TestErrors:
    def test_an_api_error_is_one_line_on_stderr_with_exit_1(self, vwm):
        result = vwm("runtime", "get", "ghost")
        assert result.exit_code == 1
        assert result.stdout == ""
        assert result.stderr == "error [not_found]: no runtime 'ghost'\n"

    def test_a_client_key_on_an_admin_command(self, vwm):
        result = vwm("runtime", "list", key=CLIENT_KEY)
        assert (result.exit_code, result.stderr) == (
            1,
            "error [forbidden]: this key's scope is client; admin calls need admin\n",
        )

    def test_no_key(self, vwm):
        result = vwm("session", "list", key=None)
        assert (result.exit_code, result.stderr) == (
            1,
            "error [config]: no API key: pass --api-key or set VWM_API_KEY\n",
        )

    def test_a_wrong_key_is_said_to_be_unknown_and_is_not_echoed(self, vwm):
        result = vwm("session", "list", key="vwm_k_mistyped")
        assert (result.exit_code, result.stderr) == (
            1,
            "error [unauthorized]: this API key is not known here: it was revoked, or it is "
            "mistyped\n",
        )

    def test_the_key_from_the_environment(self, vwm, monkeypatch: pytest.MonkeyPatch):
        monkeypatch.setenv("VWM_API_KEY", CLIENT_KEY)
        assert vwm("session", "list", "--json", key=None).stdout.strip() == "[]"

    def test_unreachable(self):
        result = CliRunner().invoke(
            app, ["--url", "http://127.0.0.1:9", "--api-key", "k", "session", "list"]
        )
        assert result.exit_code == 1
        assert result.stderr.startswith(
            "error [unreachable]: the call to the control plane at http://127.0.0.1:9"
        )
        assert "Traceback" not in result.output

    def test_usage_errors_exit_2(self, vwm):
        assert vwm("session", "nope").exit_code == 2
        assert vwm("prompt").exit_code == 2
        assert (
            vwm(
                "runtime",
                "create",
                "x",
                "--cli",
                "claude",
                "--cli-version",
                "1",
                "--prices",
                "{bad",
            ).exit_code
            == 2
        )


class TestSessions:
    def test_start_list_get_end(self, vwm, worker: str, fake: FakeControlPlane):
        started = vwm(
            "session",
            "start",
            worker,
            "--session-repo",
            "file:///task.git",
            "--branch",
            "dev",
            key=CLIENT_KEY,
        )
        assert started.exit_code == 0
        assert started.stdout == "ses_1\n"
        assert "session ses_1 of reviewer is ready" in started.stderr
        assert fake.sessions["ses_1"]["session_repo"] == {
            "url": "file:///task.git",
            "branch": "dev",
        }
        no_wait = vwm("session", "start", worker, "--no-wait", "--json")
        assert json.loads(no_wait.stdout)["status"] == "provisioning"
        listing = vwm("session", "list", "--worker", worker)
        assert "ses_1" in listing.stdout and "ses_2" in listing.stdout
        assert len(json.loads(vwm("session", "list", "--limit", "1", "--json").stdout)) == 1
        assert json.loads(vwm("session", "get", "ses_1").stdout)["worker"] == worker
        ended = vwm("session", "end", "ses_1")
        assert json.loads(ended.stdout)["status"] == "ended"
        assert vwm("session", "end", "ses_1").exit_code == 0  # ending twice is a no-op
        fake.end_fails = True
        failed = vwm("session", "end", "ses_2")
        assert (failed.exit_code, failed.stderr) == (
            1,
            "error [push_failed]: the push was rejected\n",
        )


class TestPrompt:
    def test_streams_text_tools_and_a_final_line(self, vwm, session_id: str):
        result = vwm("prompt", session_id, "say hello", key=CLIENT_KEY)
        assert result.exit_code == 0, result.output
        assert result.stdout == "Hello, world\nDone.\n"
        lines = result.stderr.splitlines()
        assert lines[0] == "→ Bash ls -la [x]"
        assert (
            lines[-1]
            == "succeeded · 110 in (100 cached) / 20 out tokens · $0.0123 (reported) · 1.5 s · job_1"
        )

    def test_a_failed_job_exits_1_with_its_error(self, vwm, session_id: str):
        result = vwm("prompt", session_id, "fail now")
        assert result.exit_code == 1
        assert result.stderr.splitlines()[-2:] == [
            "failed · 110 in (100 cached) / 20 out tokens · $0.0123 (reported) · 1.5 s · job_1",
            "error: the model refused",
        ]
        assert "! the model refused" in result.stderr

    def test_a_dropped_stream_is_resumed(self, vwm, session_id: str, fake: FakeControlPlane):
        fake.drops = [4]
        result = vwm("prompt", session_id, "say hello")
        assert (result.exit_code, result.stdout) == (0, "Hello, world\nDone.\n")

    def test_json(self, vwm, session_id: str):
        result = vwm("prompt", session_id, "say hello", "--json", "--idempotency-key", "k1")
        assert result.exit_code == 0
        job = json.loads(result.stdout)
        assert (job["id"], job["status"], job["summary"]["final_text"]) == (
            "job_1",
            "succeeded",
            "Hello, world\nDone.",
        )

    def test_async_prints_the_job_id(self, vwm, session_id: str, fake: FakeControlPlane):
        result = vwm("prompt", session_id, "-", "--async", "--timeout-s", "60", stdin="from stdin")
        assert (result.exit_code, result.stdout) == (0, "job_1\n")
        body = fake.recorded("POST", "/v1/prompts")[0].body
        assert (body["prompt"], body["mode"], body["timeout_s"]) == ("from stdin", "async", 60)

    def test_a_busy_session(self, vwm, session_id: str, fake: FakeControlPlane):
        fake.async_polls = 5
        vwm("prompt", session_id, "long", "--async")
        result = vwm("prompt", session_id, "again")
        assert (result.exit_code, result.stderr) == (
            1,
            "error [session_busy]: the session is running a job; wait or cancel it\n",
        )


class TestJobs:
    def test_get_events_cancel(self, vwm, session_id: str, fake: FakeControlPlane):
        fake.async_polls = 5
        job_id = vwm("prompt", session_id, "say hello", "--async").stdout.strip()
        assert json.loads(vwm("job", "get", job_id).stdout)["status"] == "running"
        events = vwm("job", "events", job_id, "--after", "8", "--json").stdout.splitlines()
        assert [json.loads(line)["kind"] for line in events] == ["usage", "result", "job_finished"]
        live = vwm("job", "events", job_id)
        assert live.stdout == "Hello, world\nDone.\n"
        assert json.loads(vwm("job", "cancel", job_id).stdout)["status"] == "cancelled"

    def test_an_unknown_job(self, vwm):
        result = vwm("job", "get", "job_x")
        assert (result.exit_code, result.stderr) == (1, "error [not_found]: no job 'job_x'\n")


class TestTelemetry:
    def test_requests_and_summary(self, vwm, session_id: str, fake: FakeControlPlane):
        vwm("prompt", session_id, "one", "--json")
        table = vwm("telemetry", "--worker", "reviewer", key=CLIENT_KEY)
        assert table.exit_code == 0
        header = table.stdout.splitlines()[0].split()
        assert header[:5] == ["job_id", "worker", "session_id", "model", "status"]
        assert "job_1" in table.stdout and "$0.0123 " in table.stdout
        assert fake.recorded("GET", "/v1/telemetry/requests")[0].query == {"worker": "reviewer"}
        summary = vwm("telemetry", "--summary", "--group-by", "worker")
        assert summary.stdout.splitlines()[0].split() == [
            "worker",
            "jobs",
            "tokens.input",
            "tokens.output",
            "cost_usd",
        ]
        assert "$0.0123" in summary.stdout.splitlines()[-1]
        rows = json.loads(vwm("telemetry", "--session", session_id, "--json").stdout)
        assert [r["job_id"] for r in rows] == ["job_1"]
        assert rows[0]["cost_usd"] == 0.0123  # JSON keeps the number


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        (0.0009435000000000001, "$0.0009435"),
        (0.0123, "$0.0123"),
        (0.01234567, "$0.01235"),
        (1.23456, "$1.235"),
        (1234.5678, "$1,234.57"),
        (0.5, "$0.50"),
        (2.0, "$2.00"),
        (0.0, "$0.00"),
        (0.000099996, "$0.0001"),
        (-0.25, "-$0.25"),
    ],
)
def test_money_has_four_significant_digits_and_at_least_cents(amount: float, text: str):
    assert usd(amount) == text


def test_a_cost_is_money_with_its_source_or_unknown_in_words():
    assert cost_text(0.0009435000000000001, "computed") == "$0.0009435 (computed)"
    assert cost_text(None, None) == "cost unknown"


def test_ctrl_c_cancels_the_streaming_job(
    url: str, fake: FakeControlPlane, worker_ready: str, client
):
    """A real `python -m vwm` process gets SIGINT while the answer streams."""
    session = client.worker(worker_ready).session()
    fake.stall_after = 4
    env = {**os.environ, "VWM_URL": url, "VWM_API_KEY": CLIENT_KEY}
    process = subprocess.Popen(
        [sys.executable, "-m", "vwm", "prompt", session.id, "say hello"],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.read(len("Hello")) == "Hello"
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=20)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1] == "interrupted: cancelled job job_1"
    assert fake.jobs["job_1"].status == "cancelled"
