"""Parser behaviour beyond the recorded runs: tolerance, strictness, ends, usage and cost."""

from __future__ import annotations

import json
from typing import Any

import pytest

from eventing.agent_events import EventKind, Usage
from harness.adapters import ADAPTERS
from harness.adapters.base import AdapterParseError, Prices, estimate_cost
from harness.adapters.transcript import read_objects, replay
from tests.adapters.expectations import OPENAI_BAD_KEY, transcripts_dir


def _objects(name: str) -> list[dict[str, Any]]:
    return read_objects(transcripts_dir() / name)


# -- unknown events pass through, malformed known ones fail loudly ---------------------------------


@pytest.mark.parametrize("cli", sorted(ADAPTERS))
def test_unknown_event_type_passes_through_as_raw(cli: str):
    parser = ADAPTERS[cli].new_parser()
    unknown = {"type": "brand_new_thing", "payload": [1, 2]}
    [raw] = parser.feed(unknown)
    assert raw.kind == EventKind.RAW
    assert raw.data == {"event": unknown}
    assert not parser.done


MALFORMED = [
    ("claude", {"type": "result", "subtype": "success", "is_error": False, "result": "hi"}),
    ("claude", {"type": "system", "subtype": "init", "cwd": "/w"}),
    ("claude", {"type": "assistant", "message": {"role": "assistant"}}),
    ("claude", {"type": "stream_event", "session_id": "s"}),
    ("codex", {"type": "thread.started"}),
    ("codex", {"type": "turn.completed"}),
    ("codex", {"type": "item.completed", "item": {"id": "i", "type": "agent_message"}}),
    ("codex", {"type": "turn.completed", "usage": {"input_tokens": "many", "output_tokens": 1}}),
    ("gemini", {"type": "init", "model": "auto"}),
    ("gemini", {"type": "result", "stats": {}}),
    ("gemini", {"type": "tool_use", "tool_name": "write_file"}),
    ("opencode", {"type": "text", "part": {"text": "hi"}}),
    ("opencode", {"type": "step_finish", "sessionID": "ses_1", "part": {"reason": "stop"}}),
    ("opencode", {"type": "tool_use", "sessionID": "ses_1", "part": {"tool": "write"}}),
]


@pytest.mark.parametrize(("cli", "payload"), MALFORMED)
def test_known_event_missing_a_required_key_raises_with_the_payload(cli: str, payload: dict):
    parser = ADAPTERS[cli].new_parser()
    with pytest.raises(AdapterParseError) as caught:
        parser.feed(payload)
    assert caught.value.code == "cli_output_malformed"
    assert caught.value.details["event"] == payload
    assert caught.value.details["cli"] == cli
    assert cli in caught.value.message


# -- runs that end without their terminal event ----------------------------------------------------


@pytest.mark.parametrize(
    ("exit_code", "message"),
    [
        (None, "the CLI output ended without a final event"),
        (1, "the CLI exited with code 1 without a final event"),
        (0, "the CLI exited with code 0 without a final event"),
        (-9, "the CLI was stopped by signal 9 before its final event"),
    ],
)
def test_a_run_cut_short_ends_from_its_exit_code_keeping_what_it_saw(exit_code, message):
    parser = ADAPTERS["claude"].new_parser()
    lines = _objects("claude/tool.jsonl")[:-1]  # everything but `result`
    events = replay(parser, lines, exit_code=exit_code)
    assert [e.kind for e in events[-2:]] == [EventKind.USAGE, EventKind.RESULT]
    summary = parser.summary
    assert summary.is_error
    assert summary.error == message
    assert summary.cli_session_id == "9f222563-7a33-4860-abab-2cda998a7c9b"


def test_codex_cut_short_keeps_text_and_names_the_last_error():
    parser = ADAPTERS["codex"].new_parser()
    lines = [*_objects("codex/tool.jsonl")[:-1], {"type": "error", "message": "stream lost"}]
    replay(parser, lines, exit_code=1)
    assert parser.summary.final_text == "done: wrote hello.txt"
    assert parser.summary.error == (
        "the CLI exited with code 1 without a final event; last error: stream lost"
    )


def test_gemini_without_result_keeps_the_deltas():
    parser = ADAPTERS["gemini"].new_parser()
    replay(parser, _objects("gemini/text.jsonl")[:-1], exit_code=None)
    assert parser.summary.final_text == "hello from fake model"
    assert parser.summary.is_error


def test_terminal_event_wins_over_a_later_finish():
    parser = ADAPTERS["codex"].new_parser()
    for line in _objects("codex/text.jsonl"):
        parser.feed(line)
    assert parser.done
    assert parser.finish(1) == []
    assert parser.summary.is_error is False


# -- opencode: the end always comes from finish ---------------------------------------------------


@pytest.mark.parametrize(
    ("name", "exit_code", "is_error", "error"),
    [
        ("opencode/text.jsonl", None, False, None),
        ("opencode/text.jsonl", 0, False, None),
        ("opencode/text.jsonl", 1, True, "the CLI exited with code 1 without a final event"),
        ("opencode/bad-key.jsonl", 0, True, f"{OPENAI_BAD_KEY} (HTTP 401)"),
        ("opencode/bad-key.jsonl", 1, True, f"{OPENAI_BAD_KEY} (HTTP 401)"),
    ],
)
def test_opencode_end_from_exit_code(name, exit_code, is_error, error):
    parser = ADAPTERS["opencode"].new_parser()
    replay(parser, _objects(name), exit_code=exit_code)
    assert (parser.summary.is_error, parser.summary.error) == (is_error, error)


def test_opencode_stopped_after_a_tool_step_is_not_complete():
    parser = ADAPTERS["opencode"].new_parser()
    first_step = _objects("opencode/tool.jsonl")[:3]  # ends with step_finish reason tool-calls
    replay(parser, first_step, exit_code=None)
    assert parser.summary.is_error
    assert parser.summary.error == "the CLI output ended without a final event"
    # ... but a clean exit says it finished (the CLI decides, not the parser).
    parser = ADAPTERS["opencode"].new_parser()
    replay(parser, first_step, exit_code=0)
    assert parser.summary.is_error is False


def test_opencode_counts_reasoning_as_output_and_sums_reported_cost():
    parser = ADAPTERS["opencode"].new_parser()
    step = {
        "type": "step_finish",
        "sessionID": "ses_1",
        "part": {
            "reason": "stop",
            "tokens": {"input": 10, "output": 4, "reasoning": 6, "cache": {"read": 2, "write": 1}},
            "cost": 0.25,
        },
    }
    replay(parser, [step, step], exit_code=0)
    assert parser.summary.usage == Usage(
        input=20, cache_read=4, cache_write=2, output=20, reasoning=12
    )
    assert (parser.summary.cost_usd, parser.summary.cost_source) == (0.5, "reported")


# -- codex usage is cumulative per thread ---------------------------------------------------------


def test_codex_resumed_turn_reports_its_own_usage():
    first = ADAPTERS["codex"].new_parser()
    replay(first, _objects("codex/tool.jsonl"))
    baseline = first.usage_checkpoint
    assert baseline == Usage(input=176, cache_read=10, cache_write=14, output=24, reasoning=6)

    second = ADAPTERS["codex"].new_parser(usage_baseline=baseline)
    replay(second, _objects("codex/resume.jsonl"))
    # (300 - 15 - 21) - (200 - 10 - 14) uncached input, 15 - 10 cached, 21 - 14 written,
    # 36 - 24 output, 9 - 6 reasoning: the resumed turn's one call.
    assert second.summary.usage == Usage(
        input=88, cache_read=5, cache_write=7, output=12, reasoning=3
    )
    assert second.usage_checkpoint == Usage(
        input=264, cache_read=15, cache_write=21, output=36, reasoning=9
    )


def test_codex_failed_turn_keeps_the_old_checkpoint():
    baseline = Usage(input=176, cache_read=10, cache_write=14, output=24, reasoning=6)
    parser = ADAPTERS["codex"].new_parser(usage_baseline=baseline)
    replay(parser, _objects("codex/bad-key.jsonl"))
    assert parser.summary.is_error
    assert parser.usage_checkpoint == baseline


@pytest.mark.parametrize("cli", ["claude", "gemini", "opencode"])
def test_only_codex_needs_a_usage_checkpoint(cli: str):
    parser = ADAPTERS[cli].new_parser(usage_baseline=Usage(input=1))
    assert parser.usage_checkpoint is None


# -- cost -----------------------------------------------------------------------------------------

PRICES = Prices(input=2.0, cache_read=0.5, cache_write=2.5, output=10.0)


def test_estimated_cost_prices_reasoning_inside_output():
    usage = Usage(input=1_000_000, cache_read=1_000_000, cache_write=0, output=500_000, reasoning=0)
    assert estimate_cost(usage, PRICES) == 2.0 + 0.5 + 5.0
    with_reasoning = Prices(**{**PRICES.__dict__, "reasoning": 20.0})
    usage = Usage(output=1_000_000, reasoning=250_000)
    assert estimate_cost(usage, with_reasoning) == 7.5 + 5.0
    assert estimate_cost(usage, PRICES) == 10.0  # reasoning defaults to the output price


def test_cost_is_estimated_only_without_a_reported_one():
    codex = ADAPTERS["codex"].new_parser(prices=PRICES)
    replay(codex, _objects("codex/text.jsonl"))
    # 88 input, 5 cached, 7 cache-written, 12 output (3 of them reasoning).
    expected = (88 * 2.0 + 5 * 0.5 + 7 * 2.5 + 12 * 10.0) / 1_000_000
    assert codex.summary.cost_source == "estimated"
    assert codex.summary.cost_usd == pytest.approx(expected)

    claude = ADAPTERS["claude"].new_parser(prices=PRICES)
    replay(claude, _objects("claude/text.jsonl"))
    assert (claude.summary.cost_usd, claude.summary.cost_source) == (0.00078625, "reported")


def test_opencode_zero_cost_with_a_price_table_is_estimated():
    # OpenCode reports 0 for a model it has no price for, which is every custom provider.
    parser = ADAPTERS["opencode"].new_parser(prices=PRICES)
    replay(parser, _objects("opencode/text.jsonl"), exit_code=0)
    assert parser.summary.cost_source == "estimated"
    assert parser.summary.cost_usd == pytest.approx((95 * 2.0 + 5 * 0.5 + 12 * 10.0) / 1e6)


def test_usage_event_carries_cost():
    parser = ADAPTERS["claude"].new_parser()
    events = replay(parser, _objects("claude/text.jsonl"))
    usage = next(e for e in events if e.kind == EventKind.USAGE)
    assert usage.data == {
        "input": 88,
        "cache_read": 5,
        "cache_write": 7,
        "output": 12,
        "reasoning": 0,
        "cost_usd": 0.00078625,
        "cost_source": "reported",
    }


# -- per-CLI details ------------------------------------------------------------------------------


def test_claude_error_result_without_result_text_uses_its_errors():
    parser = ADAPTERS["claude"].new_parser()
    replay(
        parser,
        [
            {
                "type": "result",
                "subtype": "error_during_execution",
                "is_error": True,
                "session_id": "s1",
                "errors": ["tool crashed"],
            }
        ],
    )
    assert parser.summary.is_error
    assert parser.summary.error == "tool crashed"
    assert parser.summary.final_text == ""


def test_claude_tool_result_blocks_are_joined_and_errors_flagged():
    parser = ADAPTERS["claude"].new_parser()
    [result] = parser.feed(
        {
            "type": "user",
            "message": {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t1",
                        "is_error": True,
                        "content": [
                            {"type": "text", "text": "exit 1: "},
                            {"type": "text", "text": "boom"},
                        ],
                    }
                ],
            },
        }
    )
    assert result.data == {"id": "t1", "output": "exit 1: boom", "is_error": True}


def test_gemini_json_mode_error_document_is_a_terminal_error():
    # What gemini printed in json mode without the auth setting: a line of text, then (to stderr,
    # stdout stays empty) a document shaped like a json-mode run.
    text = (transcripts_dir() / "gemini/auth-not-set.stderr.txt").read_text()
    parser = ADAPTERS["gemini"].new_parser()
    events = replay(parser, [json.loads(text[text.index("{") :])])
    assert [e.kind for e in events] == [
        EventKind.SESSION_STARTED,
        EventKind.USAGE,
        EventKind.RESULT,
    ]
    assert parser.summary.cli_session_id == "553a101c-b9e3-47fa-83b2-8f21b7b38b5b"
    assert parser.summary.is_error
    assert parser.summary.error == "Invalid auth method selected."


def test_gemini_failed_tool_and_text_around_it():
    parser = ADAPTERS["gemini"].new_parser()
    events = replay(
        parser,
        [
            {"type": "init", "session_id": "g1", "model": "m"},
            {"type": "message", "role": "assistant", "content": "Let me ", "delta": True},
            {"type": "message", "role": "assistant", "content": "try.", "delta": True},
            {
                "type": "tool_use",
                "tool_name": "run_shell_command",
                "tool_id": "t1",
                "parameters": {},
            },
            {
                "type": "tool_result",
                "tool_id": "t1",
                "status": "error",
                "error": {"type": "denied", "message": "not allowed"},
            },
            {"type": "message", "role": "assistant", "content": " Done.", "delta": True},
            {"type": "result", "status": "success", "stats": {}},
        ],
    )
    texts = [e.data["text"] for e in events if e.kind == EventKind.ASSISTANT_TEXT]
    assert texts == ["Let me try.", " Done."]
    [result] = [e.data for e in events if e.kind == EventKind.TOOL_RESULT]
    assert result == {"id": "t1", "output": "not allowed", "is_error": True}
    assert parser.summary.final_text == "Let me try. Done."


def test_codex_file_change_arrives_completed_only():
    parser = ADAPTERS["codex"].new_parser()
    item = {
        "id": "i3",
        "type": "file_change",
        "status": "completed",
        "changes": [{"path": "a.txt", "kind": "add"}],
    }
    call, result = parser.feed({"type": "item.completed", "item": item})
    assert (call.kind, result.kind) == (EventKind.TOOL_CALL, EventKind.TOOL_RESULT)
    assert call.data["name"] == "file_change"
    assert result.data["is_error"] is False


def test_codex_failed_command_is_a_tool_error():
    parser = ADAPTERS["codex"].new_parser()
    item = {
        "id": "i1",
        "type": "command_execution",
        "command": "false",
        "aggregated_output": "",
        "exit_code": 1,
        "status": "failed",
    }
    events = parser.feed({"type": "item.completed", "item": item})
    assert [e.kind for e in events] == [EventKind.TOOL_CALL, EventKind.TOOL_RESULT]
    assert events[1].data["is_error"] is True
