"""Each parser puts the model its CLI reported in the run summary (telemetry's `model`), read by
hand from every recorded transcript. Claude: the provider's answer (`assistant` `message.model`)
over `system/init`'s alias, `modelUsage` in json mode; Gemini: the model its stats say did the
work (`init` says ``auto`` without ``-m``); Codex and OpenCode name none in their output."""

from __future__ import annotations

from typing import Any

import pytest

from harness.adapters import ADAPTERS
from harness.adapters.transcript import read_objects, replay
from tests.adapters.expectations import EXPECTED, transcripts_dir

OPUS = "claude-opus-4-8"
OPUS_ALIAS = "claude-opus-4-8[1m]"  # what claude's init and modelUsage call it
GEMINI_MAIN = "gemini-3.8-flash"  # the model gemini's router picked (the fake's answers)

REPORTED: dict[str, str | None] = {
    # Failed before any answer: only init's alias was named (the error message is <synthetic>).
    "claude/bad-key-retries.jsonl": OPUS_ALIAS,
    "claude/bad-key.jsonl": OPUS_ALIAS,
    "claude/server-down.jsonl": OPUS_ALIAS,
    "claude/flags.jsonl": "claude-sonnet-4-5",  # asked for with --model
    "claude/instr.jsonl": OPUS,
    "claude/resume-unknown.jsonl": None,  # a lone `result` with empty modelUsage
    "claude/resume.jsonl": OPUS,
    "claude/text.json": OPUS_ALIAS,  # json mode: only modelUsage names it
    "claude/text.jsonl": OPUS,
    "claude/tool.jsonl": OPUS,
    "codex/bad-key.jsonl": None,
    "codex/flags.jsonl": None,
    "codex/instr.jsonl": None,
    "codex/resume.jsonl": None,
    "codex/server-down.jsonl": None,
    "codex/text.jsonl": None,
    "codex/tool.jsonl": None,
    # No model used a token: init's "auto" stands.
    "gemini/bad-key.jsonl": "auto",
    "gemini/server-down.jsonl": "auto",
    "gemini/flags.jsonl": "gemini-fake",  # asked for with -m
    "gemini/instr.jsonl": GEMINI_MAIN,
    "gemini/resume.jsonl": GEMINI_MAIN,
    "gemini/text.json": GEMINI_MAIN,
    "gemini/text.jsonl": GEMINI_MAIN,
    "gemini/tool.jsonl": GEMINI_MAIN,
    "opencode/bad-key.jsonl": None,
    "opencode/flags.jsonl": None,
    "opencode/instr.jsonl": None,
    "opencode/resume.jsonl": None,
    "opencode/server-down.jsonl": None,
    "opencode/text.jsonl": None,
    "opencode/tool.jsonl": None,
}


def test_every_transcript_has_its_reported_model() -> None:
    assert set(REPORTED) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(REPORTED))
def test_the_summary_names_the_model_the_cli_reported(name: str) -> None:
    parser = ADAPTERS[name.split("/")[0]].new_parser()
    events = replay(parser, read_objects(transcripts_dir() / name))
    assert parser.summary.model == REPORTED[name]
    assert events[-1].data["model"] == REPORTED[name]  # the `result` event carries it too


def feed(cli: str, objects: list[dict[str, Any]]) -> str | None:
    parser = ADAPTERS[cli].new_parser()
    replay(parser, objects)
    return parser.summary.model


def test_a_subagents_model_is_not_the_runs() -> None:
    def answer(model: str, parent: str | None) -> dict[str, Any]:
        message = {"model": model, "content": [{"type": "text", "text": "x"}]}
        return {"type": "assistant", "message": message, "parent_tool_use_id": parent}

    result = {"type": "result", "session_id": "s", "result": "x", "is_error": False}
    init = {"type": "system", "subtype": "init", "session_id": "s", "model": "alias"}
    objects = [init, answer("main-model", None), answer("small-model", "toolu_1"), result]
    assert feed("claude", objects) == "main-model"


def test_what_is_not_a_model_name_is_ignored() -> None:
    init = {"type": "init", "session_id": "s", "model": "m" * 201}
    result = {"type": "result", "status": "success", "stats": {"models": {"x": "not stats"}}}
    assert feed("gemini", [init, result]) is None
