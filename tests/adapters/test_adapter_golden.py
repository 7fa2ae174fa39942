"""Every recorded CLI transcript parses to what a person read in it (tests/adapters/expectations.py),
and the recordings are the ones the project's recording script made with the pinned CLIs."""

from __future__ import annotations

import json

import pytest

from eventing.agent_events import AgentEvent, EventKind
from harness.adapters import ADAPTERS
from harness.adapters.base import Parser
from harness.adapters.transcript import read_objects, replay
from tests.adapters.expectations import (
    EXPECTED,
    OPENAI_BAD_KEY,
    REPO_ROOT,
    manifest,
    transcripts_dir,
)


def _replay(name: str) -> tuple[list[AgentEvent], Parser]:
    cli = name.split("/")[0]
    parser = ADAPTERS[cli].new_parser()
    return replay(parser, read_objects(transcripts_dir() / name)), parser


def _recorded_files() -> set[str]:
    folder = transcripts_dir()
    return {path.relative_to(folder).as_posix() for path in folder.glob("*/*") if path.is_file()}


def test_every_transcript_has_a_hand_written_expectation():
    found = {name for name in _recorded_files() if name.endswith((".json", ".jsonl"))}
    assert found, f"no transcripts found under {transcripts_dir()}"
    assert found - set(EXPECTED) == set(), "new transcripts: add their rows to expectations.py"
    assert set(EXPECTED) - found == set(), "expectations for transcripts that are gone"


def test_every_recorded_file_is_in_the_manifest_and_the_other_way_round():
    listed = {name for run in manifest()["runs"].values() for name in run["files"]}
    assert listed == _recorded_files()


def test_the_transcripts_were_recorded_with_the_pinned_cli_versions():
    # After bumping harness/clis/package.json, re-record: `./task record-transcripts`.
    pinned = json.loads((REPO_ROOT / "harness" / "clis" / "package.json").read_text())
    recorded = manifest()["clis"]
    assert {entry["package"]: entry["version"] for entry in recorded.values()} == (
        pinned["dependencies"]
    )
    assert sorted(recorded) == sorted(ADAPTERS)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_the_recorded_exit_code_tells_the_same_story(name: str):
    # Replayed with the exit code the CLI really ended with (None: stopped by the recorder), the
    # run ends as it does from the output alone (opencode's end depends on it).
    run = next(run for run in manifest()["runs"].values() if name in run["files"])
    parser = ADAPTERS[name.split("/")[0]].new_parser()
    replay(parser, read_objects(transcripts_dir() / name), exit_code=run["exit_code"])
    assert parser.summary.is_error is EXPECTED[name].is_error
    assert parser.summary.error == EXPECTED[name].error
    if run["exit_code"] is not None:
        assert (run["exit_code"] != 0) is EXPECTED[name].is_error


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_transcript_parses_to_its_expectation(name: str):
    expected = EXPECTED[name]
    _, parser = _replay(name)
    summary = parser.summary
    usage = summary.usage
    assert summary.cli_session_id == expected.session
    assert summary.final_text == expected.text
    assert (usage.input, usage.cache_read, usage.cache_write, usage.output, usage.reasoning) == (
        expected.usage
    )
    assert summary.is_error is expected.is_error
    assert summary.error == expected.error
    assert summary.cost_usd == expected.cost
    assert summary.cost_source == expected.cost_source


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_run_ends_with_usage_then_exactly_one_result(name: str):
    events, parser = _replay(name)
    kinds = [event.kind for event in events]
    assert kinds[-2:] == [EventKind.USAGE, EventKind.RESULT]
    assert kinds.count(EventKind.RESULT) == 1
    assert events[-1].data == parser.summary.model_dump(mode="json")
    assert parser.done
    assert parser.finish(0) == []
    if expected_session := EXPECTED[name].session:
        started = [e for e in events if e.kind == EventKind.SESSION_STARTED]
        assert [e.data["cli_session_id"] for e in started] == [expected_session]


# The event kinds of a few runs, read off the files by hand.
S, D, T, C, R, U, E, X, W = (
    EventKind.SESSION_STARTED,
    EventKind.TEXT_DELTA,
    EventKind.ASSISTANT_TEXT,
    EventKind.TOOL_CALL,
    EventKind.TOOL_RESULT,
    EventKind.USAGE,
    EventKind.ERROR,
    EventKind.RESULT,
    EventKind.RAW,
)
SEQUENCES = {
    # init, status (unknown → raw), the Write call (its input_json deltas make no event), its
    # result, status, 3 text deltas, the full block, result.
    "claude/tool.jsonl": [S, W, C, R, W, D, D, D, T, U, X],
    "claude/text.jsonl": [S, W, D, D, D, D, T, U, X],
    # init, status, 2 api_retry warnings, the synthetic "Invalid API key" message, result.
    "claude/bad-key-retries.jsonl": [S, W, E, E, E, U, X],
    # A lone result still announces the session.
    "claude/text.json": [S, U, X],
    "claude/resume-unknown.jsonl": [S, U, X],
    # thread, "Model metadata" warning item, the command started and completed, the answer.
    "codex/tool.jsonl": [S, E, C, R, T, U, X],
    # thread, warning item, one reconnect + the final error, turn.failed.
    "codex/bad-key.jsonl": [S, E, E, E, U, X],
    # init, user echo (nothing), tool, result, 3 deltas closed into one block at `result`.
    "gemini/tool.jsonl": [S, C, R, D, D, D, T, U, X],
    "gemini/text.json": [S, T, U, X],
    # step_start, tool_use (call + result), step_finish, step_start, text, step_finish.
    "opencode/tool.jsonl": [S, C, R, T, U, X],
    "opencode/bad-key.jsonl": [S, E, U, X],
}


@pytest.mark.parametrize("name", sorted(SEQUENCES))
def test_event_sequence(name: str):
    events, _ = _replay(name)
    assert [event.kind for event in events] == SEQUENCES[name]


def test_tool_events_carry_what_the_cli_said():
    events, _ = _replay("claude/tool.jsonl")
    call = next(e for e in events if e.kind == EventKind.TOOL_CALL)
    result = next(e for e in events if e.kind == EventKind.TOOL_RESULT)
    assert call.data == {
        "id": "toolu_034d73467f2c2da2ee04322c",
        "name": "Write",
        "input": {
            "file_path": "/workspace/session_repo/hello.txt",
            "content": "hello from fake model\n",
        },
    }
    assert result.data["id"] == call.data["id"]
    assert result.data["output"].startswith("File created successfully")
    assert result.data["is_error"] is False

    events, _ = _replay("opencode/tool.jsonl")
    call, result = (e for e in events if e.kind in (EventKind.TOOL_CALL, EventKind.TOOL_RESULT))
    assert call.data["name"] == "write"
    assert result.data == {
        "id": "call_de8fddd20167d40f8944006d",
        "output": "Wrote file successfully.",
        "is_error": False,
    }

    events, _ = _replay("codex/tool.jsonl")
    call = next(e for e in events if e.kind == EventKind.TOOL_CALL)
    assert call.data["input"]["command"].startswith("/bin/bash -lc")


def test_errors_are_marked_fatal_or_not():
    events, _ = _replay("claude/bad-key-retries.jsonl")
    errors = [e.data for e in events if e.kind == EventKind.ERROR]
    assert [e["fatal"] for e in errors] == [False, False, True]
    assert errors[0]["message"] == (
        "API request failed (authentication_failed, HTTP 401); retry 1 of 2"
    )
    events, _ = _replay("opencode/bad-key.jsonl")
    [error] = [e.data for e in events if e.kind == EventKind.ERROR]
    assert error == {
        "message": f"{OPENAI_BAD_KEY} (HTTP 401)",
        "fatal": True,
        "code": "APIError",
    }
