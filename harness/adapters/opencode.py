"""OpenCode: command line, environment, opencode.json and the `run --format json` parser.

Registered in `harness.adapters.ADAPTERS`; used by `harness.jobs` through the `Adapter` contract.
OpenCode sends no summary event, so its parser always builds the run's end in `finish` from what
it saw and the exit code. The CLI behaviour this relies on is in docs/adapters.md ("How the CLIs
behave").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from eventing.agent_events import AgentEvent, EventKind, Usage
from harness.adapters.base import (
    MISSING_END,
    AdapterConfigError,
    Invocation,
    Parser,
    Prices,
    RunSpec,
    event,
)
from harness.adapters.runenv import (
    PROVIDER_KEY_ENV,
    home_env,
    make_dirs,
    prompt_arg,
    remove_if_present,
    tmp_dir,
    write_if_changed,
    write_json_if_changed,
)

_PROVIDER_ID = "vwm"
_SYSTEM_PROMPT_FILE = "vwm-system-prompt.md"


class OpencodeAdapter:
    kind = "opencode"
    instruction_file_name = "AGENTS.md"

    def write_config(self, spec: RunSpec) -> None:
        dirs = _xdg_dirs(spec.home)
        make_dirs(spec.home, tmp_dir(spec), *dirs.values())
        config_dir = _config_dir(spec.home)
        # OpenCode has no system-prompt flag that keeps its own prompt: the harness's system
        # prompt becomes one more instruction file.
        system_prompt_file = config_dir / _SYSTEM_PROMPT_FILE
        instructions = [str(spec.instruction_file)]
        if spec.system_prompt:
            write_if_changed(system_prompt_file, spec.system_prompt.rstrip("\n") + "\n")
            instructions.append(str(system_prompt_file))
        else:
            remove_if_present(system_prompt_file)
        write_json_if_changed(config_dir / "opencode.json", _config(spec, instructions))

    def skills_dir(self, home: Path) -> Path:
        # $XDG_CONFIG_HOME/opencode/skills, the documented (plural) global folder; opencode
        # also reads skill/, ~/.claude/skills and ~/.agents/skills.
        return _config_dir(home) / "skills"

    def invocation(self, spec: RunSpec) -> Invocation:
        """`opencode run`: one process per prompt. The harness runs prompts on the session's
        server instead (`server_invocation`); this stays the bare CLI the benchmarks compare
        against and the transcripts were recorded with."""
        argv = [spec.binary, "run", "--format", "json", "--dir", str(spec.cwd)]
        if model := _model_ref(spec):
            argv += ["-m", model]
        if spec.resume_id:
            argv += ["--session", spec.resume_id]
        # Unattended: approve every permission that is not explicitly denied, as the other CLIs'
        # bypass flags do; otherwise a permission that asks would end the run.
        argv += ["--auto", prompt_arg(spec.prompt)]
        return Invocation(argv=argv, env=_env(spec))

    # -- the server (`harness.opencode_server`) ------------------------------------------------

    def server_invocation(self, spec: RunSpec) -> Invocation:
        """`opencode serve` on loopback, on a port it picks (it prints which); the harness adds
        the password. Same environment as `run`: the same config, database and provider."""
        argv = [spec.binary, "serve", "--hostname", "127.0.0.1", "--port", "0"]
        return Invocation(argv=argv, env=_env(spec))

    def server_reads_at_start(self, spec: RunSpec) -> tuple[Path, ...]:
        """What the server reads once, at its start: opencode.json, the system prompt file and
        the skills. A change to any means a new server. (Not the whole config folder: the
        server writes there itself. The instruction files it reads again for every prompt.)"""
        config_dir = _config_dir(spec.home)
        return (
            config_dir / "opencode.json",
            config_dir / _SYSTEM_PROMPT_FILE,
            self.skills_dir(spec.home),
        )

    def new_session(self) -> dict[str, Any]:
        """`POST /session`'s body: the rules `run` gives a session it creates (no questions to
        a user, no plan mode: nobody is there to answer)."""
        return {
            "permission": [
                {"permission": name, "action": "deny", "pattern": "*"}
                for name in ("question", "plan_enter", "plan_exit")
            ]
        }

    def message(self, spec: RunSpec) -> dict[str, Any]:
        """`POST /session/{id}/message`'s body: the prompt, and the model as `run -m` names it."""
        body: dict[str, Any] = {"parts": [{"type": "text", "text": spec.prompt}]}
        if model := _model_ref(spec):
            provider, _, name = model.partition("/")
            body["model"] = {"providerID": provider, "modelID": name}
        return body

    def new_parser(
        self, *, usage_baseline: Usage | None = None, prices: Prices | None = None
    ) -> OpencodeParser:
        return OpencodeParser(usage_baseline=usage_baseline, prices=prices)

    def is_unknown_session(self, exit_code: int | None, stderr: str) -> bool:
        # An unknown resume id fails with "Session not found" (recorded in
        # tests/fixtures/transcripts/opencode/resume-unknown.stderr.txt).
        return exit_code != 0 and "Session not found" in stderr


def _env(spec: RunSpec) -> dict[str, str]:
    env = {
        **home_env(spec),
        **{name: str(path) for name, path in _xdg_dirs(spec.home).items()},
        "OPENCODE_DISABLE_MODELS_FETCH": "1",
        "OPENCODE_DISABLE_AUTOUPDATE": "1",
        "OPENCODE_DISABLE_LSP_DOWNLOAD": "1",
        # Otherwise every fresh run installs @opencode-ai/plugin from the npm registry.
        "npm_config_offline": "true",
    }
    if spec.provider is not None:
        env[PROVIDER_KEY_ENV] = spec.provider.api_key
    return env


def _xdg_dirs(home: Path) -> dict[str, Path]:
    # Config, the session database and caches: all in the workspace, so sessions survive.
    return {
        "XDG_CONFIG_HOME": home / ".config",
        "XDG_DATA_HOME": home / ".local" / "share",
        "XDG_CACHE_HOME": home / ".cache",
        "XDG_STATE_HOME": home / ".local" / "state",
    }


def _config_dir(home: Path) -> Path:
    return _xdg_dirs(home)["XDG_CONFIG_HOME"] / "opencode"


def _model_ref(spec: RunSpec) -> str | None:
    if spec.provider is None or not spec.provider.custom:
        return spec.model  # already "provider/model" for a vendor opencode knows
    if not spec.model:
        raise AdapterConfigError(
            "opencode needs a model name to use a custom provider; set VWM_MODEL or the job's model"
        )
    return f"{_PROVIDER_ID}/{spec.model}"


# Each built-in vendor provider's base path (what its default base URL ends with).
_VENDOR_PATHS = {"anthropic": "/v1", "openai": "/v1", "google": "/v1beta"}


def _config(spec: RunSpec, instructions: list[str]) -> dict[str, Any]:
    config: dict[str, Any] = {
        "$schema": "https://opencode.ai/config.json",
        "autoupdate": False,
        "share": "disabled",
        # Outside the git root (session_repo) opencode finds no AGENTS.md by itself.
        "instructions": instructions,
    }
    if spec.provider is not None and not spec.provider.custom:
        # The vendors' own endpoints, through the session's meter: opencode's built-in
        # providers keep their models and wire APIs, only their address and key change.
        config["provider"] = {
            vendor: {
                "options": {
                    "baseURL": spec.provider.base_url + path,
                    "apiKey": "{env:" + PROVIDER_KEY_ENV + "}",
                }
            }
            for vendor, path in _VENDOR_PATHS.items()
        }
    elif spec.provider is not None and (model := _model_ref(spec)):
        config["provider"] = {
            _PROVIDER_ID: {
                "npm": "@ai-sdk/openai-compatible",  # bundled: no registry access needed
                "name": "VWM provider",
                "options": {
                    "baseURL": spec.provider.base_url + "/v1",
                    "apiKey": "{env:" + PROVIDER_KEY_ENV + "}",
                },
                "models": {spec.model: {"name": spec.model, "tool_call": True}},
            }
        }
        # small_model too: otherwise the title call goes to a vendor default.
        config["model"] = config["small_model"] = model
    return config


class OpencodeParser(Parser):
    cli = "opencode"

    def __init__(self, *, usage_baseline: Usage | None = None, prices: Prices | None = None):
        super().__init__(usage_baseline=usage_baseline, prices=prices)
        self._cost_sum: float | None = None
        self._final_step = False
        self._fatal: str | None = None

    def _feed(self, data: dict[str, Any]) -> list[AgentEvent]:
        kind = data.get("type")
        if kind in ("step_start", "text", "tool_use", "step_finish", "error"):
            events = self._session(data["sessionID"])
        else:
            events = self._session(data.get("sessionID"))
        match kind:
            case "step_start":
                return events
            case "text":
                self._final_text = data["part"]["text"]  # the last text part is the answer
                return [*events, event(EventKind.ASSISTANT_TEXT, text=self._final_text)]
            case "tool_use":
                return events + _tool_events(data["part"])
            case "step_finish":
                self._step_finish(data["part"])
                return events
            case "error":
                return [*events, self._fatal_error(data["error"])]
            case _:
                return [*events, *self._raw(data)]

    def finish(self, exit_code: int | None) -> list[AgentEvent]:
        if self.done:
            return []
        if self._fatal is not None:
            return self._end(is_error=True, error=self._fatal)
        if exit_code is None:  # a transcript: only a final step proves the run completed
            return self._end(is_error=not self._final_step, error=MISSING_END)
        if exit_code == 0:
            return self._end(is_error=False)
        return self._end(is_error=True, error=self._missing_end(exit_code))

    def _step_finish(self, part: dict[str, Any]) -> None:
        tokens = part["tokens"]
        cache = tokens.get("cache") or {}
        # OpenCode's `output` excludes reasoning; normalized output includes it.
        self._usage += Usage(
            input=tokens.get("input", 0),
            cache_read=cache.get("read", 0),
            cache_write=cache.get("write", 0),
            output=tokens.get("output", 0) + tokens.get("reasoning", 0),
            reasoning=tokens.get("reasoning", 0),
        )
        self._cost_sum = (self._cost_sum or 0.0) + float(part.get("cost") or 0)
        if part.get("reason") != "tool-calls":  # "tool-calls" means another step follows
            self._final_step = True
        # OpenCode prices only models it has a price for: a custom provider always costs 0.
        use_reported = self._prices is None or self._cost_sum > 0
        self._reported_cost = self._cost_sum if use_reported else None

    def _fatal_error(self, error: dict[str, Any]) -> AgentEvent:
        data = error.get("data") or {}
        message = data.get("message") or error.get("name") or "unknown error"
        if status := data.get("statusCode"):
            message += f" (HTTP {status})"
        if self._fatal is None:
            self._fatal = message  # the first error is the cause
        return self._error(message, fatal=True, code=error.get("name"))


def _tool_events(part: dict[str, Any]) -> list[AgentEvent]:
    """OpenCode reports a tool once it is done: its call and its result at the same time."""
    state = part["state"]
    failed = state["status"] == "error"
    return [
        event(EventKind.TOOL_CALL, id=part["callID"], name=part["tool"], input=state.get("input")),
        event(
            EventKind.TOOL_RESULT,
            id=part["callID"],
            output=state.get("error") if failed else state.get("output"),
            is_error=failed,
        ),
    ]
