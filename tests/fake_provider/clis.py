"""How to run each real CLI, bare and offline, against the fake provider, and read what it reports.

One small class per CLI: the state it needs on disk (config files), its environment, its argv,
and how to read the final text and its own token total from its JSON-lines output. Everything a
run touches lives under one root directory: HOME, the CLI's state dirs, TMPDIR, the workspace.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from fake_provider import Usage

REPO_ROOT = Path(__file__).resolve().parents[2]
CLI_BIN = REPO_ROOT / ".tools" / "clis" / "node_modules" / ".bin"
KEY_VARIABLE = "VWM_FAKE_API_KEY"
"""Codex and OpenCode read the key from a variable their config names; this is its name."""


@dataclass
class CliResult:
    cli: str
    exit_code: int | None
    """None when the run was killed at its timeout."""
    stdout: str
    stderr: str
    seconds: float
    workspace: Path
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [event for event in self.events if event.get("type") == kind]


class Cli(Protocol):
    name: str
    side_calls: int
    """How many auxiliary model calls (no tools offered) one run makes, as run here."""
    total_includes_side_calls: bool
    """Whether the CLI's own token total includes its side calls' usage."""

    def prepare(self, root: Path, base_url: str) -> None:
        """Write the config files the CLI needs under `root`."""

    def env(self, root: Path, base_url: str, api_key: str) -> dict[str, str]: ...

    def argv(self, prompt: str, workspace: Path) -> list[str]: ...

    def final_text(self, result: CliResult) -> str: ...

    def reported_usage(self, result: CliResult) -> Usage:
        """The CLI's own token total for the run, normalized like the ledger's."""


class Claude:
    name = "claude"
    # With CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC and -p: only a `HEAD /` probe besides the
    # turns, no model call without tools.
    side_calls = 0
    total_includes_side_calls = False

    def prepare(self, root: Path, base_url: str) -> None:
        (root / "claude").mkdir(parents=True, exist_ok=True)

    def env(self, root: Path, base_url: str, api_key: str) -> dict[str, str]:
        return {
            "CLAUDE_CONFIG_DIR": str(root / "claude"),
            "ANTHROPIC_BASE_URL": base_url,
            "ANTHROPIC_API_KEY": api_key,
            "CLAUDE_CODE_MAX_RETRIES": "0",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        }

    def argv(self, prompt: str, workspace: Path) -> list[str]:
        return [
            str(CLI_BIN / "claude"),
            "-p",
            prompt,
            "--output-format",
            "stream-json",
            "--verbose",
            "--permission-mode",
            "acceptEdits",
        ]

    def final_text(self, result: CliResult) -> str:
        return str(result.of_type("result")[-1]["result"])

    def reported_usage(self, result: CliResult) -> Usage:
        usage = result.of_type("result")[-1]["usage"]
        return Usage(
            input=usage["input_tokens"],
            cache_read=usage["cache_read_input_tokens"],
            cache_write=usage["cache_creation_input_tokens"],
            output=usage["output_tokens"],
        )


class Codex:
    name = "codex"
    side_calls = 0
    total_includes_side_calls = False
    model = "gpt-fake"
    # [analytics] and [features] keep it off the network: without them it resolves chatgpt.com
    # (analytics) and github.com / api.github.com (curated plugin sync) on every run.
    CONFIG = """\
model = "{model}"
model_provider = "fake"

[analytics]
enabled = false

[features]
plugins = false

[model_providers.fake]
name = "fake"
base_url = "{base_url}/v1"
env_key = "{key_variable}"
wire_api = "responses"
request_max_retries = 0
stream_max_retries = 0
"""

    def prepare(self, root: Path, base_url: str) -> None:
        home = root / "codex"
        home.mkdir(parents=True, exist_ok=True)
        config = self.CONFIG.format(model=self.model, base_url=base_url, key_variable=KEY_VARIABLE)
        (home / "config.toml").write_text(config)

    def env(self, root: Path, base_url: str, api_key: str) -> dict[str, str]:
        return {"CODEX_HOME": str(root / "codex"), KEY_VARIABLE: api_key}

    def argv(self, prompt: str, workspace: Path) -> list[str]:
        return [
            str(CLI_BIN / "codex"),
            "exec",
            "--json",
            "--skip-git-repo-check",
            "--dangerously-bypass-approvals-and-sandbox",
            "-m",
            self.model,
            "-C",
            str(workspace),
            prompt,
        ]

    def final_text(self, result: CliResult) -> str:
        messages = [
            e["item"]["text"]
            for e in result.of_type("item.completed")
            if e["item"].get("type") == "agent_message"
        ]
        return str(messages[-1]) if messages else ""

    def reported_usage(self, result: CliResult) -> Usage:
        # input_tokens includes the cached and the cache-written tokens.
        usage = result.of_type("turn.completed")[-1]["usage"]
        cached, written = usage["cached_input_tokens"], usage.get("cache_write_input_tokens", 0)
        return Usage(
            input=usage["input_tokens"] - cached - written,
            cache_read=cached,
            cache_write=written,
            output=usage["output_tokens"],
            reasoning=usage["reasoning_output_tokens"],
        )


class Gemini:
    name = "gemini"
    # Without -m the model is "auto": a router call (`generateContent` on a flash-lite model,
    # JSON, no tools) picks the model first, and `result.stats` sums every model it used, the
    # router's too.
    side_calls = 1
    total_includes_side_calls = True
    SETTINGS: ClassVar[dict[str, Any]] = {
        "security": {"auth": {"selectedType": "gemini-api-key"}},
        "privacy": {"usageStatisticsEnabled": False},
        "general": {"disableAutoUpdate": True, "maxAttempts": 1, "retryFetchErrors": False},
        "telemetry": {"enabled": False},
    }

    def prepare(self, root: Path, base_url: str) -> None:
        settings = root / "gemini" / ".gemini" / "settings.json"
        settings.parent.mkdir(parents=True, exist_ok=True)
        settings.write_text(json.dumps(self.SETTINGS, indent=2))

    def env(self, root: Path, base_url: str, api_key: str) -> dict[str, str]:
        return {
            "GEMINI_CLI_HOME": str(root / "gemini"),
            "GEMINI_API_KEY": api_key,
            "GOOGLE_GEMINI_BASE_URL": base_url,
        }

    def argv(self, prompt: str, workspace: Path) -> list[str]:
        return [
            str(CLI_BIN / "gemini"),
            "-p",
            prompt,
            "--skip-trust",
            "--yolo",
            "--output-format",
            "stream-json",
        ]

    def final_text(self, result: CliResult) -> str:
        return "".join(
            str(e["content"]) for e in result.of_type("message") if e.get("role") == "assistant"
        )

    def reported_usage(self, result: CliResult) -> Usage:
        # stream-json stats: output_tokens counts candidates only; thoughts are the rest of total.
        stats = result.of_type("result")[-1]["stats"]
        generated = stats["total_tokens"] - stats["input_tokens"]
        return Usage(
            input=stats["input"],
            cache_read=stats["cached"],
            output=generated,
            reasoning=generated - stats["output_tokens"],
        )


class OpenCode:
    name = "opencode"
    # It asks its small_model for a session title (a streamed Chat call without tools); the
    # title call is not a step, so the step_finish total leaves it out.
    side_calls = 1
    total_includes_side_calls = False

    def config(self, base_url: str) -> dict[str, Any]:
        return {
            "$schema": "https://opencode.ai/config.json",
            "provider": {
                "fake": {
                    "npm": "@ai-sdk/openai-compatible",
                    "name": "Fake provider",
                    "options": {"baseURL": f"{base_url}/v1", "apiKey": f"{{env:{KEY_VARIABLE}}}"},
                    "models": {"fake-model": {"name": "Fake model", "tool_call": True}},
                }
            },
            "model": "fake/fake-model",
            "small_model": "fake/fake-model",
            "autoupdate": False,
            "share": "disabled",
        }

    def prepare(self, root: Path, base_url: str) -> None:
        config = root / "xdg" / "config" / "opencode" / "opencode.json"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(json.dumps(self.config(base_url), indent=2))

    def env(self, root: Path, base_url: str, api_key: str) -> dict[str, str]:
        return {
            KEY_VARIABLE: api_key,
            "OPENCODE_DISABLE_MODELS_FETCH": "1",
            "OPENCODE_DISABLE_AUTOUPDATE": "1",
            "OPENCODE_DISABLE_LSP_DOWNLOAD": "1",
            # Otherwise it installs @opencode-ai/plugin from registry.npmjs.org into its config
            # dir on every run (in the background; a failure is only logged).
            "npm_config_offline": "true",
        }

    def argv(self, prompt: str, workspace: Path) -> list[str]:
        return [str(CLI_BIN / "opencode"), "run", "--format", "json", prompt]

    def final_text(self, result: CliResult) -> str:
        texts = [e["part"]["text"] for e in result.of_type("text")]
        return str(texts[-1]) if texts else ""

    def reported_usage(self, result: CliResult) -> Usage:
        # tokens.output excludes tokens.reasoning; the title call is not a step.
        total = Usage()
        for event in result.of_type("step_finish"):
            tokens = event["part"]["tokens"]
            total = total + Usage(
                input=tokens["input"],
                cache_read=tokens["cache"]["read"],
                cache_write=tokens["cache"]["write"],
                output=tokens["output"] + tokens["reasoning"],
                reasoning=tokens["reasoning"],
            )
        return total


CLIS: dict[str, Cli] = {cli.name: cli for cli in (Claude(), Codex(), Gemini(), OpenCode())}


def isolated_env(root: Path) -> dict[str, str]:
    """An environment with nothing from the caller's but PATH: HOME, XDG dirs, TMPDIR in `root`."""
    dirs = {
        "HOME": root / "home",
        "TMPDIR": root / "tmp",
        "XDG_CONFIG_HOME": root / "xdg" / "config",
        "XDG_DATA_HOME": root / "xdg" / "data",
        "XDG_CACHE_HOME": root / "xdg" / "cache",
        "XDG_STATE_HOME": root / "xdg" / "state",
    }
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    return {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        **{name: str(path) for name, path in dirs.items()},
    }


def git_workspace(root: Path) -> Path:
    """`root/workspace`, a fresh git repository: the CLI's working directory."""
    workspace = root / "workspace"
    workspace.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q", str(workspace)], check=True, capture_output=True)
    return workspace


def launch(
    cli: Cli, prompt: str, *, root: Path, base_url: str, api_key: str
) -> subprocess.Popen[str]:
    """Start `cli` on `prompt` in a fresh git workspace under `root`, in its own process group."""
    workspace = git_workspace(root)
    cli.prepare(root, base_url)
    env = {**isolated_env(root), **cli.env(root, base_url, api_key)}
    return subprocess.Popen(
        cli.argv(prompt, workspace),
        cwd=workspace,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def kill_group(proc: subprocess.Popen[str]) -> None:
    """Kill what is left of the run's process group (the CLI, or helpers it left behind)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def run_cli(
    cli: Cli, prompt: str, *, root: Path, base_url: str, api_key: str, timeout: float = 120
) -> CliResult:
    """Run `cli` once on `prompt` and wait for it; kill it at `timeout` (exit_code None)."""
    started = time.monotonic()
    proc = launch(cli, prompt, root=root, base_url=base_url, api_key=api_key)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
        exit_code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        kill_group(proc)
        stdout, stderr = proc.communicate()
        exit_code = None
    finally:
        kill_group(proc)
    seconds = time.monotonic() - started
    result = CliResult(cli.name, exit_code, stdout, stderr, seconds, root / "workspace")
    result.events = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    return result
