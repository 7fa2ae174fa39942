"""Claude Code: command line, environment, config and the stream-json parser.

Registered in `harness.adapters.ADAPTERS`; used by `harness.jobs` through the `Adapter` contract.
The CLI behaviour this relies on is in docs/adapters.md ("How the CLIs behave").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from eventing.agent_events import AgentEvent, EventKind, Usage
from harness.adapters.base import Invocation, Parser, Prices, RunSpec, event
from harness.adapters.runenv import home_env, make_dirs, prompt_arg, tmp_dir


class ClaudeAdapter:
    kind = "claude"
    # Claude reads CLAUDE.md files from its cwd up to /, so the one at the workspace root (the
    # parent of session_repo) is read with no extra set-up.
    instruction_file_name = "CLAUDE.md"

    def write_config(self, spec: RunSpec) -> None:
        make_dirs(spec.home, _config_dir(spec.home), tmp_dir(spec))

    def skills_dir(self, home: Path) -> Path:
        # $CLAUDE_CONFIG_DIR/skills: the user scope (not ~/.agents/skills, which it ignores).
        return _config_dir(home) / "skills"

    def invocation(self, spec: RunSpec) -> Invocation:
        argv = [
            spec.binary,
            "-p",
            prompt_arg(spec.prompt),
            "--output-format",
            "stream-json",
            "--verbose",  # stream-json refuses to run without it
            "--include-partial-messages",  # token-level text for live streaming
            # Unattended runs need file writes *and* shell commands; acceptEdits allows only the
            # first. As root this flag needs IS_SANDBOX=1 (set below), or claude exits 1.
            "--dangerously-skip-permissions",
        ]
        if spec.model:
            argv += ["--model", spec.model]
        if spec.resume_id:
            argv += ["--resume", spec.resume_id]
        if spec.system_prompt:
            # The `=` form: a value starting with "-" must not be read as a flag.
            argv.append(f"--append-system-prompt={spec.system_prompt}")
        env = {
            **home_env(spec),
            "CLAUDE_CONFIG_DIR": str(_config_dir(spec.home)),
            "IS_SANDBOX": "1",
            # Fail fast and let the harness decide: the default retries for about three minutes.
            "CLAUDE_CODE_MAX_RETRIES": "0",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        }
        if spec.provider is not None:
            env["ANTHROPIC_BASE_URL"] = spec.provider.base_url  # claude adds /v1/messages itself
            env["ANTHROPIC_API_KEY"] = spec.provider.api_key
        return Invocation(argv=argv, env=env)

    def new_parser(
        self, *, usage_baseline: Usage | None = None, prices: Prices | None = None
    ) -> ClaudeParser:
        return ClaudeParser(usage_baseline=usage_baseline, prices=prices)

    def is_unknown_session(self, exit_code: int | None, stderr: str) -> bool:
        # An unknown resume id fails with "No conversation found with session ID" (recorded in
        # tests/fixtures/transcripts/claude/resume-unknown.stderr.txt).
        return exit_code != 0 and "No conversation found" in stderr


def _config_dir(home: Path) -> Path:
    return home / ".claude"


class ClaudeParser(Parser):
    cli = "claude"

    def _feed(self, data: dict[str, Any]) -> list[AgentEvent]:
        match data.get("type"):
            case "system":
                return self._system(data)
            case "stream_event":
                return self._stream_event(data["event"])
            case "assistant":
                return self._assistant(data)
            case "user":
                return self._user(data)
            case "result":
                return self._result(data)
            case _:
                return self._raw(data)

    def _system(self, data: dict[str, Any]) -> list[AgentEvent]:
        match data.get("subtype"):
            case "init":
                return self._session(data["session_id"], data.get("model"))
            case "api_retry":
                status = data.get("error_status")
                message = f"API request failed ({data.get('error') or 'error'}"
                message += f", HTTP {status})" if status else ")"
                message += f"; retry {data.get('attempt')} of {data.get('max_retries')}"
                return [self._error(message, fatal=False, code=data.get("error"))]
            case _:
                return self._raw(data)

    def _stream_event(self, stream: dict[str, Any]) -> list[AgentEvent]:
        # Only text deltas matter live; the complete blocks follow as `assistant` events.
        if stream["type"] == "content_block_delta" and stream["delta"]["type"] == "text_delta":
            return [event(EventKind.TEXT_DELTA, text=stream["delta"]["text"])]
        return []

    def _assistant(self, data: dict[str, Any]) -> list[AgentEvent]:
        blocks: list[dict[str, Any]] = data["message"]["content"]
        if data.get("error"):
            # A synthetic message ("Invalid API key · ...") standing for a failed API call: the
            # turn ends here and `result` follows with is_error.
            text = "".join(block.get("text", "") for block in blocks)
            return [self._error(text or data["error"], fatal=True, code=data["error"])]
        if not data.get("parent_tool_use_id"):  # a subagent's model is not the run's
            # The provider's answer names the model that ran (init names an alias of it,
            # "claude-opus-4-8[1m]"); the last answer's wins, as claude may fall back.
            self._reported_model(data["message"].get("model"))
        events: list[AgentEvent] = []
        for block in blocks:
            match block["type"]:
                case "text":
                    events.append(event(EventKind.ASSISTANT_TEXT, text=block["text"]))
                case "tool_use":
                    events.append(
                        event(
                            EventKind.TOOL_CALL,
                            id=block["id"],
                            name=block["name"],
                            input=block.get("input", {}),
                        )
                    )
                case _:
                    pass  # thinking blocks have no normalized event
        return events

    def _user(self, data: dict[str, Any]) -> list[AgentEvent]:
        content = data["message"]["content"]
        if isinstance(content, str):
            return []  # the prompt echoed back
        return [
            event(
                EventKind.TOOL_RESULT,
                id=block["tool_use_id"],
                output=_tool_output(block.get("content")),
                is_error=bool(block.get("is_error")),
            )
            for block in content
            if block["type"] == "tool_result"
        ]

    def _result(self, data: dict[str, Any]) -> list[AgentEvent]:
        events = self._session(data["session_id"])
        usage = data.get("usage") or {}
        # `input_tokens` already excludes cached tokens; per-message usage is not the final count.
        self._usage = Usage(
            input=usage.get("input_tokens", 0),
            cache_read=usage.get("cache_read_input_tokens", 0),
            cache_write=usage.get("cache_creation_input_tokens", 0),
            output=usage.get("output_tokens", 0),
        )
        if data.get("total_cost_usd") is not None:
            self._reported_cost = float(data["total_cost_usd"])
        result = data.get("result")
        self._final_text = result if isinstance(result, str) else ""
        if self._model is None:  # json mode: `result` alone, its usage keyed by model
            self._reported_model(_busiest(data.get("modelUsage")))
        # `subtype` says "success" even when `is_error` is true: is_error decides.
        subtype = str(data.get("subtype", "success"))
        is_error = bool(data.get("is_error")) or subtype.startswith("error")
        error = self._final_text or "; ".join(map(str, data.get("errors") or [])) or subtype
        return events + self._end(is_error=is_error, error=error)


def _busiest(model_usage: Any) -> str | None:
    """The model of `modelUsage` that used the most tokens, None when none used any."""
    if not isinstance(model_usage, dict):
        return None
    used = {
        name: tokens
        for name, usage in model_usage.items()
        if isinstance(usage, dict)
        and (tokens := _int(usage.get("inputTokens")) + _int(usage.get("outputTokens"))) > 0
    }
    return max(used, key=lambda name: used[name]) if used else None


def _int(value: Any) -> int:
    return value if isinstance(value, int) else 0


def _tool_output(content: Any) -> Any:
    """A tool result's content: a string, or the text of its text blocks joined."""
    if isinstance(content, list):
        texts = [block.get("text", "") for block in content if block.get("type") == "text"]
        return "".join(texts) if len(texts) == len(content) else content
    return content
