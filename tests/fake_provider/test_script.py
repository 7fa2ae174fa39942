"""The default script: triggers, the choice of each CLI's file-writing tool, JSON answers."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fake_provider.script import (
    FILE_CONTENT,
    TEXT,
    DefaultScript,
    ModelRequest,
    Reply,
    ToolCall,
    ToolSpec,
    example_for_schema,
    file_to_write,
    sleep_seconds,
)

WRITE_SCHEMA = {"properties": {"file_path": {"type": "string"}, "content": {"type": "string"}}}
CLAUDE_WRITE = ToolSpec("Write", WRITE_SCHEMA)
GEMINI_WRITE = ToolSpec("write_file", WRITE_SCHEMA)
OPENCODE_WRITE = ToolSpec(
    "write", {"properties": {"filePath": {"type": "string"}, "content": {"type": "string"}}}
)
CODEX_EXEC = ToolSpec("exec_command", {"properties": {"cmd": {"type": "string"}}})
ARRAY_SHELL = ToolSpec("shell", {"properties": {"command": {"type": "array"}}})
READ = ToolSpec("Read", {"properties": {"file_path": {"type": "string"}}})


def request(
    prompt: str,
    *tools: ToolSpec,
    tool_result_after_prompt: bool = False,
    context: str = "",
    json_schema: dict[str, Any] | None = None,
) -> ModelRequest:
    return ModelRequest(
        api="test",
        model="m",
        prompt=prompt,
        tool_result_after_prompt=tool_result_after_prompt,
        tools=tools,
        context=context,
        json_schema=json_schema,
    )


@pytest.mark.parametrize(
    ("prompt", "name"),
    [
        ("write hello.txt", "hello.txt"),
        ("Create notes.md with a greeting", "notes.md"),
        ("please write a file named out/data.json now", "out/data.json"),
        ("create the file called `a_b-c.py`.", "a_b-c.py"),
        ('"write hello.txt"', "hello.txt"),
        ("write a poem", None),
        ("write ../escape.txt", None),
        ("write ../worker_repo/knowledge/lessons.md", "../worker_repo/knowledge/lessons.md"),
        ("write ../../escape/x.txt", None),
        ("write ../worker_repo/../../escape/x.txt", None),
        ("write ../worker_repo/../escape.txt", None),
        ("write ../.vwm/state.md", None),
        ("write /etc/passwd.bak", None),
        ("say hello", None),
    ],
)
def test_write_trigger_names_a_safe_relative_file(prompt: str, name: str | None) -> None:
    assert file_to_write(prompt) == name


@pytest.mark.parametrize(
    ("prompt", "seconds"), [("sleep 3", 3.0), ("please SLEEP 0.5 then", 0.5), ("asleep", 0.0)]
)
def test_sleep_trigger(prompt: str, seconds: float) -> None:
    assert sleep_seconds(prompt) == seconds


def test_plain_prompt_gets_the_text() -> None:
    assert DefaultScript().reply(request("say hello", CLAUDE_WRITE)) == Reply(text=TEXT)


@pytest.mark.parametrize(
    ("tool", "arguments"),
    [
        (CLAUDE_WRITE, {"file_path": "/ws/notes.md", "content": FILE_CONTENT}),
        (GEMINI_WRITE, {"file_path": "/ws/notes.md", "content": FILE_CONTENT}),
        (OPENCODE_WRITE, {"filePath": "/ws/notes.md", "content": FILE_CONTENT}),
    ],
)
def test_write_uses_the_offered_file_writer_with_an_absolute_path(
    tool: ToolSpec, arguments: dict[str, str]
) -> None:
    req = request("create notes.md", READ, tool, context="Primary working directory: /ws\n")
    assert DefaultScript().reply(req) == Reply(tool_call=ToolCall(tool.name, arguments))


def test_write_without_a_known_working_directory_uses_the_bare_name() -> None:
    reply = DefaultScript().reply(request("write a.txt", CLAUDE_WRITE))
    assert isinstance(reply, Reply) and reply.tool_call is not None
    assert reply.tool_call.arguments["file_path"] == "a.txt"


def test_write_falls_back_to_a_shell_tool_with_its_argument_shape() -> None:
    codex = DefaultScript().reply(request("write hello.txt", CODEX_EXEC))
    assert codex == Reply(
        tool_call=ToolCall(
            "exec_command", {"cmd": "printf %s 'hello from fake model\n' > hello.txt"}
        )
    )
    shell = DefaultScript().reply(request("write hello.txt", ARRAY_SHELL))
    assert isinstance(shell, Reply) and shell.tool_call is not None
    assert shell.tool_call.arguments["command"][:2] == ["bash", "-lc"]


SIBLING = "../worker_repo/knowledge/lessons.md"


def test_a_file_beside_the_working_directory_gets_a_normalized_absolute_path() -> None:
    req = request(f"write {SIBLING}", CLAUDE_WRITE, context="Working directory: /ws/session_repo\n")
    assert DefaultScript().reply(req) == Reply(
        tool_call=ToolCall(
            "Write", {"file_path": "/ws/worker_repo/knowledge/lessons.md", "content": FILE_CONTENT}
        )
    )
    done = request(f"write {SIBLING}", CLAUDE_WRITE, tool_result_after_prompt=True)
    assert DefaultScript().reply(done) == Reply(text=f"done: wrote {SIBLING}")


def test_a_shell_write_into_a_folder_makes_the_folder_first() -> None:
    reply = DefaultScript().reply(request(f"write {SIBLING}", CODEX_EXEC))
    assert reply == Reply(
        tool_call=ToolCall(
            "exec_command",
            {
                "cmd": "mkdir -p ../worker_repo/knowledge && "
                f"printf %s 'hello from fake model\n' > {SIBLING}"
            },
        )
    )


def test_after_the_tool_result_the_answer_is_done() -> None:
    req = request("write hello.txt", CLAUDE_WRITE, tool_result_after_prompt=True)
    assert DefaultScript().reply(req) == Reply(text="done: wrote hello.txt")


def test_write_without_tools_is_a_plain_answer() -> None:
    # e.g. OpenCode's title call sees the same prompt but offers no tools.
    assert DefaultScript().reply(request("write hello.txt")) == Reply(text=TEXT)


def test_sleep_slows_down_any_answer_of_a_turn() -> None:
    reply = DefaultScript().reply(request("sleep 2 then write x.txt", CODEX_EXEC))
    assert isinstance(reply, Reply) and reply.duration == 2.0 and reply.tool_call is not None


def test_sleep_does_not_slow_down_auxiliary_calls() -> None:
    # Gemini CLI's router and OpenCode's title call see the prompt too, but offer no tools.
    assert DefaultScript().reply(request("sleep 60")) == Reply(text=TEXT)


def test_json_requests_get_an_object_matching_the_schema() -> None:
    # Gemini CLI's model router asks for this shape (types in Google's upper case).
    schema = {
        "type": "OBJECT",
        "properties": {
            "complexity_reasoning": {"type": "STRING"},
            "complexity_score": {"type": "INTEGER"},
        },
        "required": ["complexity_reasoning", "complexity_score"],
    }
    reply = DefaultScript().reply(request("say hello", json_schema=schema))
    assert isinstance(reply, Reply)
    assert json.loads(reply.text) == {"complexity_reasoning": TEXT, "complexity_score": 1}


def test_example_for_schema_covers_the_common_keywords() -> None:
    assert example_for_schema({"enum": ["user", "model"]}) == "user"
    assert example_for_schema({"type": ["null", "boolean"]}) is False
    assert example_for_schema({"type": "array", "minItems": 2, "items": {"const": 3}}) == [3, 3]
    assert example_for_schema({"anyOf": [{"type": "number", "minimum": 5}]}) == 5
    assert example_for_schema({}) == {}


@pytest.mark.parametrize(
    "context",
    [
        "<environment_context>\n  <cwd>/ws</cwd>\n</environment_context>",
        " - Primary working directory: /ws\n",
        "Working directory: /ws\n",
        "- **Workspace Directories:**\n  - /ws\n- **Directory Structure:**",
    ],
)
def test_working_directory_is_found_in_each_clis_context(context: str) -> None:
    assert request("x", context=context).working_directory == "/ws"
