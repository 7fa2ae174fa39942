"""Gemini CLI: command line, environment, settings.json and the output parser.

Registered in `harness.adapters.ADAPTERS`; used by `harness.jobs` through the `Adapter` contract.
The harness runs `--output-format stream-json`; the parser also reads the single document of
`--output-format json` (no "type" key), so recorded runs of either mode replay. The CLI behaviour
this relies on is in docs/adapters.md ("How the CLIs behave").
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from eventing.agent_events import AgentEvent, EventKind, Usage
from harness.adapters.base import Invocation, Parser, Prices, RunSpec, event
from harness.adapters.runenv import (
    home_env,
    make_dirs,
    prompt_arg,
    sync_instructions,
    tmp_dir,
    write_json_if_changed,
)

# Without selectedType gemini exits 41; the rest turns off phoning home and the ~4 minutes of
# retries it does by default, so a dead endpoint fails fast and the harness decides.
_SETTINGS: dict[str, Any] = {
    "security": {"auth": {"selectedType": "gemini-api-key"}},
    "general": {"disableAutoUpdate": True, "maxAttempts": 1, "retryFetchErrors": False},
    "privacy": {"usageStatisticsEnabled": False},
    "telemetry": {"enabled": False},
}


class GeminiAdapter:
    kind = "gemini"
    instruction_file_name = "GEMINI.md"

    def write_config(self, spec: RunSpec) -> None:
        gemini_dir = _gemini_dir(spec.home)
        make_dirs(spec.home, gemini_dir, tmp_dir(spec))
        write_json_if_changed(gemini_dir / "settings.json", _SETTINGS)
        # Gemini reads GEMINI.md from cwd up to the git root only, plus the global one here. It
        # has no flag to add to the system prompt (GEMINI_SYSTEM_MD replaces all of it, tool
        # rules included), so the harness's system prompt goes into this context file too.
        sync_instructions(spec, gemini_dir / "GEMINI.md", with_system_prompt=True)

    def skills_dir(self, home: Path) -> Path:
        # ~/.gemini/skills under GEMINI_CLI_HOME (the home); skills are on by default
        # (`skills.enabled`), so the settings need nothing for them.
        return _gemini_dir(home) / "skills"

    def invocation(self, spec: RunSpec) -> Invocation:
        argv = [
            spec.binary,
            "-p",
            prompt_arg(spec.prompt),
            "--skip-trust",  # else an untrusted folder exits 55
            "--yolo",  # without it write and shell tools are not even offered
            "--output-format",
            "stream-json",
        ]
        if spec.model:
            argv += ["-m", spec.model]  # also skips the extra routing call
        if spec.resume_id:
            argv += ["--resume", spec.resume_id]
        knowledge = spec.workspace / "worker_repo"
        if knowledge.is_dir():
            # Gemini's file tools refuse paths outside the working directory ("Path not in
            # workspace"): the worker's knowledge repo is the one other folder it must write
            # (its notes, auto-learning), as the other CLIs can.
            argv += ["--include-directories", str(knowledge)]
        env = {**home_env(spec), "GEMINI_CLI_HOME": str(spec.home)}
        if spec.provider is not None:
            env["GEMINI_API_KEY"] = spec.provider.api_key
            env["GOOGLE_GEMINI_BASE_URL"] = spec.provider.base_url
        return Invocation(argv=argv, env=env)

    def new_parser(
        self, *, usage_baseline: Usage | None = None, prices: Prices | None = None
    ) -> GeminiParser:
        return GeminiParser(usage_baseline=usage_baseline, prices=prices)

    def is_unknown_session(self, exit_code: int | None, stderr: str) -> bool:
        # An unknown resume id fails with exit code 42 (see the manifest in tests/fixtures/transcripts).
        return exit_code == 42


def _gemini_dir(home: Path) -> Path:
    return home / ".gemini"


class GeminiParser(Parser):
    cli = "gemini"

    def __init__(self, *, usage_baseline: Usage | None = None, prices: Prices | None = None):
        super().__init__(usage_baseline=usage_baseline, prices=prices)
        self._block: list[str] = []  # assistant deltas since the last tool call

    def _feed(self, data: dict[str, Any]) -> list[AgentEvent]:
        match data.get("type"):
            case "init":
                return self._session(data["session_id"], data.get("model"))
            case "message":
                return self._message(data)
            case "tool_use":
                return [
                    *self._close_block(),
                    event(
                        EventKind.TOOL_CALL,
                        id=data["tool_id"],
                        name=data["tool_name"],
                        input=data.get("parameters", {}),
                    ),
                ]
            case "tool_result":
                failed = data["status"] != "success"
                output = data.get("output")
                if failed and output is None:
                    output = (data.get("error") or {}).get("message")
                return [
                    event(EventKind.TOOL_RESULT, id=data["tool_id"], output=output, is_error=failed)
                ]
            case "error":
                # Warnings (loop detected, ...) and errors the run survives; `result` ends it.
                return [self._error(data["message"], fatal=data.get("severity") == "error")]
            case "result":
                return self._result(data)
            case None if "session_id" in data:
                return self._json_document(data)
            case _:
                return self._raw(data)

    def _message(self, data: dict[str, Any]) -> list[AgentEvent]:
        if data["role"] != "assistant":
            return []  # the prompt echoed back
        text: str = data["content"]
        self._final_text += text  # the answer is every assistant delta, joined
        if data.get("delta"):
            self._block.append(text)
            return [event(EventKind.TEXT_DELTA, text=text)]
        return [event(EventKind.ASSISTANT_TEXT, text=text)]

    def _close_block(self) -> list[AgentEvent]:
        """The deltas so far as one complete `assistant_text`, like the other CLIs give."""
        text, self._block = "".join(self._block), []
        return [event(EventKind.ASSISTANT_TEXT, text=text)] if text else []

    def _result(self, data: dict[str, Any]) -> list[AgentEvent]:
        events = self._close_block()
        stats = data.get("stats") or {}
        self._usage = _stream_usage(stats)
        # init says "auto" without -m; the stats name the model that did the work.
        self._reported_model(_busiest(stats.get("models"), lambda m: m.get("total_tokens")))
        is_error = data["status"] != "success"
        error = (data.get("error") or {}).get("message") or f"the run ended {data['status']!r}"
        return events + self._end(is_error=is_error, error=error)

    def _json_document(self, data: dict[str, Any]) -> list[AgentEvent]:
        """`--output-format json`: one document holding the whole run, or its error."""
        models = (data.get("stats") or {}).get("models") or {}
        self._reported_model(_busiest(models, lambda m: (m.get("tokens") or {}).get("total")))
        events = self._session(data["session_id"])
        response = data.get("response")
        if isinstance(response, str) and response:
            self._final_text = response
            events.append(event(EventKind.ASSISTANT_TEXT, text=response))
        self._usage = sum((_model_usage(m["tokens"]) for m in models.values()), Usage())
        error = data.get("error")
        if error is None:
            return events + self._end(is_error=False)
        return events + self._end(is_error=True, error=error.get("message") or str(error))


def _busiest(models: Any, total: Callable[[dict[str, Any]], Any]) -> str | None:
    """The model of `stats.models` that used the most tokens (the router asked first uses
    fewer), None when none used any."""
    if not isinstance(models, dict):
        return None
    used = {
        name: count
        for name, stats in models.items()
        if isinstance(stats, dict) and isinstance(count := total(stats), int) and count > 0
    }
    return max(used, key=lambda name: used[name]) if used else None


def _stream_usage(stats: dict[str, Any]) -> Usage:
    """stream-json stats. `output_tokens` counts candidates only; the thoughts are visible only
    as what `total_tokens` holds beyond prompt and candidates, and they are output too."""
    prompt = stats.get("input_tokens", 0)
    cached = stats.get("cached", 0)
    candidates = stats.get("output_tokens", 0)
    thoughts = max(0, stats.get("total_tokens", 0) - prompt - candidates)
    return Usage(
        input=stats.get("input", max(0, prompt - cached)),
        cache_read=cached,
        output=candidates + thoughts,
        reasoning=thoughts,
    )


def _model_usage(tokens: dict[str, Any]) -> Usage:
    """One model's tokens in json mode: `prompt` includes `cached`; `candidates` excludes
    `thoughts`."""
    cached = tokens.get("cached", 0)
    thoughts = tokens.get("thoughts", 0)
    return Usage(
        input=tokens.get("input", max(0, tokens.get("prompt", 0) - cached)),
        cache_read=cached,
        output=tokens.get("candidates", 0) + thoughts,
        reasoning=thoughts,
    )
