"""Every recorded CLI transcript parses to what a person read in it (tests/adapters/expectations.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from eventing.agent_events import AgentEvent, EventKind
from harness.adapters import ADAPTERS
from harness.adapters.base import Parser
from harness.adapters.transcript import read_objects, replay
from tests.adapters.expectations import EXPECTED, transcripts_dir


def _dir() -> Path:
    folder = transcripts_dir()
    if not folder.is_dir():
        pytest.fail(
            f"the recorded CLI transcripts are not at {folder}; set VWM_SHARED_DIR to the folder "
            "that holds cli-transcripts/"
        )
    return folder


def _replay(name: str) -> tuple[list[AgentEvent], Parser]:
    cli = name.split("/")[0]
    parser = ADAPTERS[cli].new_parser()
    return replay(parser, read_objects(_dir() / name)), parser


def test_every_transcript_has_a_hand_written_expectation():
    folder = _dir()
    found = {
        path.relative_to(folder).as_posix()
        for path in folder.rglob("*")
        if path.suffix in (".json", ".jsonl")
    }
    assert found, f"no transcripts found under {folder}"
    assert found - set(EXPECTED) == set(), "new transcripts: add their rows to expectations.py"
    assert set(EXPECTED) - found == set(), "expectations for transcripts that are gone"


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
    # init, "I'll write the file.", Write, its result, "done: ...", result.
    "claude/tool.jsonl": [S, T, C, R, T, U, X],
    # init, system/status (unknown → raw), 4 deltas, the full block, result.
    "claude/text-partial.jsonl": [S, W, D, D, D, D, T, U, X],
    # init, 10 api_retry warnings, the synthetic error message, result.
    "claude/bad-key.jsonl": [S, *[E] * 10, E, U, X],
    # A lone result still announces the session.
    "claude/text.json": [S, U, X],
    # thread, "Model metadata" warning item, the command started and completed, the answer.
    "codex/tool.jsonl": [S, E, C, R, T, U, X],
    # thread, warning item, 5 reconnects + the final error, turn.failed.
    "codex/bad-key.jsonl": [S, E, *[E] * 6, U, X],
    # init, user echo (nothing), tool, result, 3 deltas closed into one block at `result`.
    "gemini/tool.jsonl": [S, C, R, D, D, D, T, U, X],
    "gemini/text.json": [S, T, U, X],
    # step_start, tool_use (call + result), step_finish, step_start, text, step_finish.
    "opencode/tool.jsonl": [S, C, R, T, U, X],
    "opencode/bad-key.jsonl": [S, E, U, X],
    # The serve response has no "type": passed through.
    "opencode/serve-message-response.json": [W, U, X],
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
        "id": "toolu_119806088906406eb251",
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
        "id": "call_91d4671d9c2242e1",
        "output": "Wrote file successfully.",
        "is_error": False,
    }

    events, _ = _replay("codex/tool.jsonl")
    call = next(e for e in events if e.kind == EventKind.TOOL_CALL)
    assert call.data["input"]["command"].startswith("/bin/bash -lc")


def test_errors_are_marked_fatal_or_not():
    events, _ = _replay("claude/bad-key.jsonl")
    errors = [e.data for e in events if e.kind == EventKind.ERROR]
    assert [e["fatal"] for e in errors] == [False] * 10 + [True]
    assert errors[0]["message"] == (
        "API request failed (authentication_failed, HTTP 401); retry 1 of 10"
    )
    events, _ = _replay("opencode/bad-key.jsonl")
    [error] = [e.data for e in events if e.kind == EventKind.ERROR]
    assert error == {
        "message": "Incorrect API key provided: bad-key. (HTTP 401)",
        "fatal": True,
        "code": "APIError",
    }
