"""Codex CLI: command line, environment, config.toml and the `exec --json` parser.

Registered in `harness.adapters.ADAPTERS`; used by `harness.jobs` through the `Adapter` contract.
The CLI behaviour this relies on is in docs/adapters.md ("How the CLIs behave").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from eventing.agent_events import AgentEvent, EventKind, Usage
from harness.adapters.base import Invocation, Parser, Prices, RunSpec, event
from harness.adapters.runenv import (
    PROVIDER_KEY_ENV,
    home_env,
    make_dirs,
    prompt_arg,
    sync_instructions,
    tmp_dir,
    toml_string,
    write_if_changed,
)

_PROVIDER_ID = "vwm"
# Items that are the agent using a tool; each becomes a tool_call and a tool_result.
_TOOL_ITEMS = frozenset({"command_execution", "file_change", "mcp_tool_call", "web_search"})


class CodexAdapter:
    kind = "codex"
    instruction_file_name = "AGENTS.md"

    def write_config(self, spec: RunSpec) -> None:
        codex_home = _codex_home(spec.home)
        make_dirs(spec.home, codex_home, tmp_dir(spec))
        # Codex looks for AGENTS.md only from cwd up to the git root (session_repo), never in
        # the workspace root above it; $CODEX_HOME/AGENTS.md is its global instruction file.
        sync_instructions(spec, codex_home / "AGENTS.md")
        base_url = spec.provider.base_url if spec.provider is not None else None
        write_if_changed(codex_home / "config.toml", _config_toml(base_url))

    def skills_dir(self, home: Path) -> Path:
        # $CODEX_HOME/skills, where codex keeps its own system skills too (in .system/, which no
        # skill name can be); it also reads ~/.agents/skills.
        return _codex_home(home) / "skills"

    def invocation(self, spec: RunSpec) -> Invocation:
        options = ["--json", "--skip-git-repo-check", "--dangerously-bypass-approvals-and-sandbox"]
        if spec.model:
            options += ["-m", spec.model]  # a resumed thread needs it again
        if spec.system_prompt:
            # The value is parsed as TOML: quoting it keeps any text a plain string.
            options += ["-c", f"developer_instructions={toml_string(spec.system_prompt)}"]
        prompt = prompt_arg(spec.prompt)
        if spec.resume_id:
            # `exec resume` has no -C: the runner's cwd (session_repo) is the working directory.
            argv = [spec.binary, "exec", "resume", spec.resume_id, prompt, *options]
        else:
            argv = [spec.binary, "exec", *options, "-C", str(spec.cwd), prompt]
        env = {**home_env(spec), "CODEX_HOME": str(_codex_home(spec.home))}
        if spec.provider is not None:
            env[PROVIDER_KEY_ENV] = spec.provider.api_key
        return Invocation(argv=argv, env=env)

    def new_parser(
        self, *, usage_baseline: Usage | None = None, prices: Prices | None = None
    ) -> CodexParser:
        return CodexParser(usage_baseline=usage_baseline, prices=prices)

    def is_unknown_session(self, exit_code: int | None, stderr: str) -> bool:
        # An unknown id fails with "thread/resume failed: no rollout found" (recorded in
        # tests/fixtures/transcripts/codex/resume-unknown.stderr.txt),
        # a thread whose first turn was killed early with "...: rollout at PATH is empty". Either
        # way the thread cannot be resumed (resuming only reads local files).
        return exit_code != 0 and "thread/resume failed" in stderr


def _codex_home(home: Path) -> Path:
    return home / ".codex"


def _config_toml(base_url: str | None) -> str:
    # Analytics and plugin sync would reach chatgpt.com and github.com from inside the sandbox;
    # both are off. The endpoint can only be set here (OPENAI_BASE_URL is ignored); the key stays
    # in the environment, named by env_key. One retry at most: fail fast, the job can be re-sent.
    lines = [
        "# Written by the VWM harness (harness/adapters/codex.py) before every run.",
    ]
    if base_url is not None:
        lines.append(f"model_provider = {toml_string(_PROVIDER_ID)}")
    lines += ["", "[analytics]", "enabled = false", "", "[features]", "plugins = false"]
    if base_url is not None:
        lines += [
            "",
            f"[model_providers.{_PROVIDER_ID}]",
            f"name = {toml_string(_PROVIDER_ID)}",
            f"base_url = {toml_string(base_url + '/v1')}",
            f"env_key = {toml_string(PROVIDER_KEY_ENV)}",
            'wire_api = "responses"',
            "request_max_retries = 1",
            "stream_max_retries = 1",
        ]
    return "\n".join(lines) + "\n"


class CodexParser(Parser):
    cli = "codex"

    def __init__(self, *, usage_baseline: Usage | None = None, prices: Prices | None = None):
        super().__init__(usage_baseline=usage_baseline, prices=prices)
        self._cumulative: Usage | None = None
        self._called: set[str] = set()

    @property
    def usage_checkpoint(self) -> Usage | None:
        # The thread's running total; without a new one, the old baseline still holds.
        return self._cumulative if self._cumulative is not None else self._baseline

    def _feed(self, data: dict[str, Any]) -> list[AgentEvent]:
        match data.get("type"):
            case "thread.started":
                return self._session(data["thread_id"])
            case "turn.started" | "item.updated":
                return []
            case "item.started":
                return self._item_started(data["item"])
            case "item.completed":
                return self._item_completed(data["item"])
            case "error":
                # Reconnect notices and the like: the turn goes on, or turn.failed follows.
                return [self._error(data["message"], fatal=False)]
            case "turn.completed":
                self._cumulative = _usage(data["usage"])
                self._usage = self._cumulative - (self._baseline or Usage())
                return self._end(is_error=False)
            case "turn.failed":
                error = data.get("error") or {}
                return self._end(is_error=True, error=error.get("message") or "the turn failed")
            case _:
                return self._raw(data)

    def _item_started(self, item: dict[str, Any]) -> list[AgentEvent]:
        if item["type"] in _TOOL_ITEMS:
            self._called.add(item["id"])
            return [_tool_call(item)]
        return []

    def _item_completed(self, item: dict[str, Any]) -> list[AgentEvent]:
        match item["type"]:
            case "agent_message":
                self._final_text = item["text"]  # the last one is the answer
                return [event(EventKind.ASSISTANT_TEXT, text=item["text"])]
            case "error":
                return [self._error(item["message"], fatal=False)]
            case kind if kind in _TOOL_ITEMS:
                # Some tool items (file changes) only ever arrive completed.
                events = [] if item["id"] in self._called else [_tool_call(item)]
                return [*events, _tool_result(item)]
            case _:
                return self._raw({"type": "item.completed", "item": item})


def _usage(usage: dict[str, Any]) -> Usage:
    """Codex's cumulative thread usage, normalized. `input_tokens` is the whole prompt (as in the
    Responses API), cache reads and writes included; `output_tokens` includes reasoning."""
    cached = usage.get("cached_input_tokens", 0)
    written = usage.get("cache_write_input_tokens", 0)
    return Usage(
        input=max(0, usage["input_tokens"] - cached - written),
        cache_read=cached,
        cache_write=written,
        output=usage["output_tokens"],
        reasoning=usage.get("reasoning_output_tokens", 0),
    )


def _tool_call(item: dict[str, Any]) -> AgentEvent:
    match item["type"]:
        case "command_execution":
            name, args = "command_execution", {"command": item["command"]}
        case "file_change":
            name, args = "file_change", {"changes": item.get("changes", [])}
        case "mcp_tool_call":
            name, args = f"{item.get('server')}/{item['tool']}", item.get("arguments") or {}
        case _:
            name, args = item["type"], {"query": item.get("query")}
    return event(EventKind.TOOL_CALL, id=item["id"], name=name, input=args)


def _tool_result(item: dict[str, Any]) -> AgentEvent:
    failed = item.get("status") in ("failed", "declined")
    match item["type"]:
        case "command_execution":
            output: Any = item.get("aggregated_output", "")
            failed = failed or item.get("exit_code") not in (None, 0)
        case "file_change":
            output = item.get("changes", [])
        case "mcp_tool_call":
            error = item.get("error")
            output = error.get("message") if error else item.get("result")
            failed = failed or bool(error)
        case _:
            output = None
    return event(EventKind.TOOL_RESULT, id=item["id"], output=output, is_error=failed)
