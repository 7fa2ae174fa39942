"""What the fake model answers: the `Script` protocol and the default, trigger-driven script.

The wire modules turn each HTTP request into an API-neutral `ModelRequest`; the app asks the
provider's script for a `Reply` (or a `Failure`) and hands it back to the wire module to encode.
A script sees only the neutral request, so one script drives all four APIs.

Default triggers (matched in the last user prompt, case-insensitive):
- `write NAME` / `create NAME` (optionally "a file named NAME"), where NAME is a relative file name
  with an extension, under the working directory or, starting ``../``, under a folder beside it
  (``../worker_repo/knowledge/lessons.md``): one call of the CLI's own file-writing tool (or its
  shell tool) that writes NAME with `FILE_CONTENT`; once a tool result follows the prompt, the
  text `done: wrote NAME`.
- ``run `COMMAND` ``: one call of the CLI's shell tool running COMMAND in its working directory;
  once a tool result follows the prompt, the text `done: ran it`.
- `sleep N`: the answer streams over N seconds, first chunk at once (only when tools are offered:
  auxiliary calls answer at once).
- anything else: the text `TEXT`. A request that asks for JSON output gets a minimal object that
  fits the requested schema.
"""

from __future__ import annotations

import json
import posixpath
import re
import shlex
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Protocol

from fake_provider.usage import Usage

TEXT = "hello from fake model"
FILE_CONTENT = "hello from fake model\n"

WRITE_TRIGGER = re.compile(
    r"\b(?:write|create)\s+(?:(?:a|an|the|new)\s+)?(?:file\s+)?(?:(?:named|called)\s+)?"
    r"[`'\"]?(?P<name>(?:\.\./)?[A-Za-z0-9_][A-Za-z0-9_./-]*\.[A-Za-z0-9]+)",
    re.IGNORECASE,
)
RUN_TRIGGER = re.compile(r"\brun\s+`(?P<command>[^`\n]+)`", re.IGNORECASE)
SLEEP_TRIGGER = re.compile(r"\bsleep\s+(?P<seconds>\d+(?:\.\d+)?)\b", re.IGNORECASE)
WORKING_DIR_PATTERNS = (
    re.compile(r"<cwd>\s*(?P<dir>/[^<\n]*?)\s*</cwd>"),
    re.compile(r"working directory:\s*(?P<dir>/\S+)", re.IGNORECASE),
    re.compile(r"Workspace Directories:\**\s*-\s*(?P<dir>/\S+)"),
)


@dataclass(frozen=True)
class ToolSpec:
    """A tool the caller offered: its name, the JSON schema of its arguments, its description."""

    name: str
    parameters: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    @property
    def properties(self) -> dict[str, Any]:
        props = self.parameters.get("properties")
        return props if isinstance(props, dict) else {}


@dataclass(frozen=True)
class ModelRequest:
    """One model call, whatever API it came in on."""

    api: str
    model: str
    prompt: str
    """Text of the last user message that is not a tool result ("" if there is none)."""
    tool_result_after_prompt: bool
    tools: tuple[ToolSpec, ...] = ()
    context: str = ""
    """System prompt and every other message text, for facts such as the working directory."""
    system: str = ""
    """The system prompt alone: system and developer messages, instructions, systemInstruction."""
    injected_context: str = ""
    """The context blocks the CLI put in user messages (`<system-reminder>`, ...), whole."""
    stream: bool = False
    json_schema: dict[str, Any] | None = None
    """Set when the caller asked for JSON output matching this schema."""

    def tool(self, name: str) -> ToolSpec | None:
        return next((tool for tool in self.tools if tool.name == name), None)

    @property
    def working_directory(self) -> str | None:
        for pattern in WORKING_DIR_PATTERNS:
            match = pattern.search(self.context)
            if match:
                return match.group("dir").rstrip(".")
        return None


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class Reply:
    """A successful answer: text, or one tool call, streamed over `duration` seconds."""

    text: str = ""
    tool_call: ToolCall | None = None
    duration: float = 0.0
    usage: Usage | None = None
    """Usage to report; None lets the provider choose (`FIXED` for turns, `AUX` for auxiliary
    calls)."""

    def describe(self) -> dict[str, Any]:
        if self.tool_call is not None:
            return {
                "kind": "tool_call",
                "name": self.tool_call.name,
                "arguments": self.tool_call.arguments,
            }
        return {"kind": "text", "text": self.text}


@dataclass(frozen=True)
class Failure:
    """An HTTP error, encoded in the API's own error format."""

    status: int
    message: str

    def describe(self) -> dict[str, Any]:
        return {"kind": "error", "status": self.status, "message": self.message}


class Script(Protocol):
    """Decides the answer to one model call. Must be deterministic and must not block."""

    def reply(self, request: ModelRequest) -> Reply | Failure: ...


class DefaultScript:
    """The triggers described in the module docstring."""

    def reply(self, request: ModelRequest) -> Reply | Failure:
        # Only a turn (tools offered) is slowed down: a CLI's auxiliary calls (titles, routing)
        # answer at once, so "sleep N" holds the agent's answer, not the CLI's bookkeeping.
        duration = sleep_seconds(request.prompt) if request.tools else 0.0
        if request.json_schema is not None:
            return Reply(
                text=json.dumps(example_for_schema(request.json_schema)), duration=duration
            )
        run = RUN_TRIGGER.search(request.prompt)
        if run is not None and request.tools:
            if request.tool_result_after_prompt:
                return Reply(text="done: ran it", duration=duration)
            call = next(
                (c for t in request.tools if (c := _shell_call(t, run["command"])) is not None),
                None,
            )
            if call is not None:
                return Reply(tool_call=call, duration=duration)
        name = file_to_write(request.prompt)
        if name is not None and request.tools:
            if request.tool_result_after_prompt:
                return Reply(text=f"done: wrote {name}", duration=duration)
            call = write_file_call(request, name)
            if call is not None:
                return Reply(tool_call=call, duration=duration)
        return Reply(text=TEXT, duration=duration)


def sleep_seconds(prompt: str) -> float:
    match = SLEEP_TRIGGER.search(prompt)
    return float(match.group("seconds")) if match else 0.0


def file_to_write(prompt: str) -> str | None:
    """The file name a prompt asks to write, if it names a safe relative one: under the working
    directory, or under a folder beside it (one leading ``..``, then a folder: the working
    directory's parent itself, or anything higher, is never written)."""
    match = WRITE_TRIGGER.search(prompt)
    if match is None:
        return None
    name = match.group("name")
    parts = PurePosixPath(name).parts
    if parts[0] == "..":
        parts = parts[1:] if len(parts) >= 3 else ("..",)
    if ".." in parts:
        return None
    return name


def write_file_call(request: ModelRequest, name: str) -> ToolCall | None:
    """A call of the request's file-writing tool, or else its shell tool, that writes `name`."""
    base = request.working_directory
    # Normalized: a CLI may refuse a path that climbs out of its working directory with "..".
    path = posixpath.normpath(posixpath.join(base, name)) if base else name
    for tool in request.tools:
        path_key = _file_writer_path_key(tool)
        if path_key is not None:
            return ToolCall(tool.name, {path_key: path, "content": FILE_CONTENT})
    command = f"printf %s {shlex.quote(FILE_CONTENT)} > {shlex.quote(name)}"
    folder = posixpath.dirname(name)
    if folder:  # the file-writing tools make missing folders; a shell redirect does not
        command = f"mkdir -p {shlex.quote(folder)} && {command}"
    for tool in request.tools:
        call = _shell_call(tool, command)
        if call is not None:
            return call
    return None


def _file_writer_path_key(tool: ToolSpec) -> str | None:
    if "write" not in tool.name.lower() or "content" not in tool.properties:
        return None
    return next(
        (
            key
            for key in ("file_path", "filePath", "path", "absolute_path")
            if key in tool.properties
        ),
        None,
    )


def _shell_call(tool: ToolSpec, command: str) -> ToolCall | None:
    if not re.search(r"shell|exec|bash|command", tool.name, re.IGNORECASE):
        return None
    props = tool.properties
    if "cmd" in props:
        return ToolCall(tool.name, {"cmd": command})
    if "command" in props:
        kind = str(props["command"].get("type", "string")).lower()
        value: Any = ["bash", "-lc", command] if kind == "array" else command
        return ToolCall(tool.name, {"command": value})
    return None


def example_for_schema(schema: Any) -> Any:
    """A small value that satisfies a JSON schema: first enum entry, minimums, required keys."""
    if not isinstance(schema, dict):
        return None
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return example_for_schema(schema[key][0])
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    kind = str(kind).lower()
    if kind == "object":
        props = schema.get("properties") or {}
        return {key: example_for_schema(sub) for key, sub in props.items()}
    if kind == "array":
        count = int(schema.get("minItems", 0))
        return [example_for_schema(schema.get("items", {})) for _ in range(count)]
    if kind in ("integer", "number"):
        return schema.get("minimum", 1)
    if kind == "boolean":
        return False
    if kind == "string":
        return TEXT
    return None
