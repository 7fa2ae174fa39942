"""`python -m harness.adapters CLI FILE`, run as a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.adapters import ADAPTERS
from tests.adapters.expectations import REPO_ROOT, manifest, transcripts_dir

SUMMARY_KEYS = [
    "cli_session_id",
    "final_text",
    "usage",
    "cost_usd",
    "cost_source",
    "is_error",
    "error",
    "model",
    "cli_usage",
    "usage_source",
    "usage_mismatch",
]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness.adapters", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


def test_prints_events_then_the_summary_line():
    done = _run("codex", str(transcripts_dir() / "codex/tool.jsonl"))
    assert done.returncode == 0, done.stderr
    *events, summary = _lines(done.stdout)
    assert [e["kind"] for e in events] == [
        "session_started",
        "error",
        "tool_call",
        "tool_result",
        "assistant_text",
        "usage",
        "result",
    ]
    assert all(set(e) == {"kind", "data"} for e in events)
    assert list(summary) == SUMMARY_KEYS
    assert list(summary["usage"]) == ["input", "cache_read", "cache_write", "output", "reasoning"]
    assert summary["final_text"] == "done: wrote hello.txt"
    assert summary == events[-1]["data"]


def test_pretty_printed_json_document_is_one_event():
    done = _run("gemini", str(transcripts_dir() / "gemini/text.json"))
    assert done.returncode == 0, done.stderr
    summary = _lines(done.stdout)[-1]
    assert summary["cli_session_id"] == "ded427d1-d0d6-4ebc-94cb-a8d9d0e7b9c0"
    assert summary["usage"] == {
        "input": 95,
        "cache_read": 5,
        "cache_write": 0,
        "output": 12,
        "reasoning": 3,
    }


@pytest.mark.parametrize(
    "name", ["claude/bad-key.jsonl", "opencode/server-down.jsonl", "codex/server-down.jsonl"]
)
def test_a_failed_run_is_data_exit_zero(name: str):
    done = _run(name.split("/")[0], str(transcripts_dir() / name))
    assert done.returncode == 0, done.stderr
    assert _lines(done.stdout)[-1]["is_error"] is True


def test_non_json_lines_are_skipped(tmp_path: Path):
    source = (transcripts_dir() / "claude/text.jsonl").read_text()
    noisy = tmp_path / "noisy.jsonl"
    noisy.write_text("Warning: colour not supported\n\n" + source + "[1, 2]\n")
    done = _run("claude", str(noisy))
    assert done.returncode == 0, done.stderr
    assert _lines(done.stdout)[-1]["final_text"] == "hello from fake model"


def test_bad_usage_exits_2():
    unknown = _run("cursor", str(transcripts_dir() / "claude/text.jsonl"))
    assert unknown.returncode == 2
    assert "cursor" in unknown.stderr
    missing = _run("claude", "/nonexistent/transcript.jsonl")
    assert missing.returncode == 2
    assert "no such file" in missing.stderr
    assert missing.stdout == ""


def test_malformed_known_event_exits_1(tmp_path: Path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"type": "result", "subtype": "success", "is_error": False}) + "\n")
    done = _run("claude", str(bad))
    assert done.returncode == 1
    assert "cannot read" in done.stderr
    assert '"type": "result"' in done.stderr


def test_corrupt_json_line_exits_1(tmp_path: Path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"type": "init", "session_id": \n')
    done = _run("gemini", str(bad))
    assert done.returncode == 1
    assert "not valid JSON" in done.stderr


@pytest.mark.parametrize("cli", sorted(ADAPTERS))
def test_an_unknown_resume_id_is_recognised(cli: str):
    # What each CLI really said and how it exited when asked to resume a session it never saw.
    exit_code = manifest()["runs"][f"{cli}/resume-unknown"]["exit_code"]
    stderr = (transcripts_dir() / cli / "resume-unknown.stderr.txt").read_text()
    adapter = ADAPTERS[cli]
    assert adapter.is_unknown_session(exit_code, stderr)
    assert not adapter.is_unknown_session(0, "")
    # Any other failure is not one, a bad key included.
    bad_key = manifest()["runs"][f"{cli}/bad-key"]["exit_code"]
    assert not adapter.is_unknown_session(bad_key, "Invalid API key")
