"""`opencode serve`'s events → `opencode run --format json` lines (`harness.adapters.opencode_events`).

The recorded server stream (tests/fixtures/opencode_serve/tool.sse) must become the lines
`opencode run` printed for the same prompt (tests/fixtures/transcripts/opencode/tool.jsonl), so
the parser, its golden transcripts and every normalized event stay the same on the server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from eventing.agent_events import EventKind
from harness.adapters.opencode import OpencodeAdapter
from harness.adapters.opencode_events import RunLines
from harness.adapters.transcript import read_objects, replay

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SESSION = "ses_one"


def _recorded_events() -> list[dict[str, Any]]:
    text = (FIXTURES / "opencode_serve" / "tool.sse").read_text()
    return [json.loads(line[5:]) for line in text.splitlines() if line.startswith("data:")]


def _lines_of(events: list[dict[str, Any]], session_id: str) -> tuple[list[dict], RunLines]:
    lines = RunLines(session_id)
    out: list[dict[str, Any]] = []
    for event in events:
        out += lines.feed(event, now_ms=1)
        if lines.idle:
            break
    return out, lines


def test_the_recorded_stream_becomes_what_opencode_run_printed() -> None:
    events = _recorded_events()
    (created,) = [e for e in events if e["type"] == "session.created"]
    lines, state = _lines_of(events, created["properties"]["info"]["id"])
    assert state.idle
    ran = read_objects(FIXTURES / "transcripts" / "opencode" / "tool.jsonl")
    assert [line["type"] for line in lines] == [line["type"] for line in ran]
    assert [line["part"].get("tool") for line in lines] == [
        line["part"].get("tool") for line in ran
    ]
    assert {line["sessionID"] for line in lines} == {created["properties"]["info"]["id"]}

    served = replay(OpencodeAdapter().new_parser(), lines, exit_code=0)
    printed = replay(OpencodeAdapter().new_parser(), ran, exit_code=0)
    assert [e.kind for e in served] == [e.kind for e in printed]
    served_end, printed_end = served[-1].data, printed[-1].data
    assert served_end["final_text"] == printed_end["final_text"] != ""
    assert served_end["usage"] == printed_end["usage"]
    assert served_end["is_error"] is False
    tool_call = next(e for e in served if e.kind == EventKind.TOOL_CALL)
    assert tool_call.data["name"] == "write"
    assert tool_call.data["input"]["filePath"].endswith("/hello.txt")


def _part(kind: str, session: str = SESSION, **fields: Any) -> dict[str, Any]:
    part = {"type": kind, "sessionID": session, "id": "prt_1", "messageID": "msg_1", **fields}
    return {"type": "message.part.updated", "properties": {"sessionID": session, "part": part}}


def _status(kind: str, session: str = SESSION) -> dict[str, Any]:
    return {
        "type": "session.status",
        "properties": {"sessionID": session, "status": {"type": kind}},
    }


def test_parts_print_only_once_finished_and_only_for_the_session() -> None:
    lines = RunLines(SESSION)
    assert lines.feed(_part("text", text="partial", time={"start": 1}), 5) == []
    assert lines.feed(_part("text", session="ses_other", text="x", time={"end": 2}), 5) == []
    running = _part("tool", tool="bash", state={"status": "running"})
    assert lines.feed(running, 5) == []
    done = _part("tool", tool="bash", state={"status": "error", "error": "boom"})
    (line,) = lines.feed(done, 5)
    assert line == {
        "type": "tool_use",
        "timestamp": 5,
        "sessionID": SESSION,
        "part": done["properties"]["part"],
    }
    assert lines.feed(_part("reasoning", text="hm", time={"end": 3}), 5) == []
    (text,) = lines.feed(_part("text", text="final", time={"start": 1, "end": 2}), 6)
    assert text["type"] == "text" and text["part"]["text"] == "final"


def test_idle_counts_only_after_this_prompt_made_the_session_busy() -> None:
    lines = RunLines(SESSION)
    lines.feed(_status("idle"), 1)  # the aborted prompt before this one settling
    assert not lines.idle
    lines.feed(_status("busy", session="ses_other"), 1)
    lines.feed(_status("idle", session="ses_other"), 1)
    assert not lines.idle
    lines.feed(_status("busy"), 1)
    assert not lines.idle
    lines.feed(_status("idle"), 1)
    assert lines.idle


def test_a_session_error_is_an_error_line_the_parser_ends_the_run_with() -> None:
    lines = RunLines(SESSION)
    error = {"name": "APIError", "data": {"message": "invalid api key", "statusCode": 401}}
    event = {"type": "session.error", "properties": {"sessionID": SESSION, "error": error}}
    (line,) = lines.feed(event, 1)
    assert line["type"] == "error" and line["error"] == error
    other = {"type": "session.error", "properties": {"sessionID": "ses_other", "error": error}}
    assert lines.feed(other, 1) == []
    end = replay(OpencodeAdapter().new_parser(), [line], exit_code=0)[-1].data
    assert end["is_error"] and "invalid api key (HTTP 401)" in end["error"]


def test_permissions_of_the_session_and_its_sub_agents_are_approved_no_others() -> None:
    lines = RunLines(SESSION)
    child = {
        "type": "session.created",
        "properties": {"info": {"id": "ses_child", "parentID": SESSION}},
    }
    stranger = {
        "type": "session.created",
        "properties": {"info": {"id": "ses_x", "parentID": "ses_y"}},
    }
    lines.feed(child, 1)
    lines.feed(stranger, 1)

    def asked(session: str) -> dict[str, Any]:
        return {
            "type": "permission.asked",
            "properties": {"id": f"per_{session}", "sessionID": session},
        }

    assert lines.permission_to_approve(asked(SESSION)) == f"per_{SESSION}"
    assert lines.permission_to_approve(asked("ses_child")) == "per_ses_child"
    assert lines.permission_to_approve(asked("ses_x")) is None
    assert lines.permission_to_approve(_status("busy")) is None


def test_the_message_names_the_model_as_run_m_does() -> None:
    from harness.adapters.base import ProviderConfig, RunSpec

    spec = RunSpec(
        prompt="- a list item",
        workspace=Path("/w"),
        cwd=Path("/w/session_repo"),
        home=Path("/w/.cli-home"),
        instruction_file=Path("/w/AGENTS.md"),
        binary="opencode",
        model="fake-model",
        provider=ProviderConfig(base_url="http://127.0.0.1:1", api_key="k"),
    )
    body = OpencodeAdapter().message(spec)
    # Over HTTP the prompt needs no guard against reading as a flag.
    assert body == {
        "parts": [{"type": "text", "text": "- a list item"}],
        "model": {"providerID": "vwm", "modelID": "fake-model"},
    }
    vendor = RunSpec(**{**spec.__dict__, "model": "anthropic/claude-x", "provider": None})
    assert OpencodeAdapter().message(vendor)["model"] == {
        "providerID": "anthropic",
        "modelID": "claude-x",
    }
