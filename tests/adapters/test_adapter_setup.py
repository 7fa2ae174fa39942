"""Command lines, environments and config files of each adapter (pure: no CLI is started)."""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import replace
from pathlib import Path

import pytest

from harness.adapters import ADAPTERS, get_adapter
from harness.adapters.base import (
    AdapterConfigError,
    Invocation,
    ProviderConfig,
    RunSpec,
    UnknownCli,
)

SECRET = "sk-test-secret-0123456789"
PROVIDER = ProviderConfig(base_url="http://127.0.0.1:18002", api_key=SECRET)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    (tmp_path / "session_repo").mkdir()
    return tmp_path


def spec_for(cli: str, workspace: Path, **changes) -> RunSpec:
    adapter = ADAPTERS[cli]
    spec = RunSpec(
        prompt="say hello",
        workspace=workspace,
        cwd=workspace / "session_repo",
        home=workspace / ".cli-home",
        instruction_file=workspace / adapter.instruction_file_name,
        binary=f"/opt/bin/{cli}",
        model="fake-model",
        provider=PROVIDER,
    )
    return replace(spec, **changes)


def test_registry_and_lookup():
    assert set(ADAPTERS) == {"claude", "codex", "gemini", "opencode"}
    for kind, adapter in ADAPTERS.items():
        assert adapter.kind == kind
        assert get_adapter(kind) is adapter
    with pytest.raises(UnknownCli, match="choose one of claude, codex, gemini, opencode"):
        get_adapter("cursor")


def test_instruction_file_names():
    names = {kind: adapter.instruction_file_name for kind, adapter in ADAPTERS.items()}
    assert names == {
        "claude": "CLAUDE.md",
        "codex": "AGENTS.md",
        "gemini": "GEMINI.md",
        "opencode": "AGENTS.md",
    }


# -- invocations ----------------------------------------------------------------------------------


@pytest.mark.parametrize("cli", sorted(ADAPTERS))
def test_secret_only_in_env_and_state_under_home(cli: str, workspace: Path):
    spec = spec_for(cli, workspace, resume_id="sess-1", system_prompt="Be brief.")
    invocation = ADAPTERS[cli].invocation(spec)
    assert isinstance(invocation, Invocation)
    assert invocation.argv[0] == spec.binary
    assert not any(SECRET in arg for arg in invocation.argv)
    assert SECRET in invocation.env.values()
    home = str(spec.home)
    assert invocation.env["HOME"] == home
    assert invocation.env["TMPDIR"].startswith(home + "/")
    state_vars = {
        "claude": ["CLAUDE_CONFIG_DIR"],
        "codex": ["CODEX_HOME"],
        "gemini": ["GEMINI_CLI_HOME"],
        "opencode": ["XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME"],
    }[cli]
    for name in state_vars:
        assert invocation.env[name].startswith(home), name
    assert all(isinstance(value, str) for value in invocation.env.values())


@pytest.mark.parametrize("cli", sorted(ADAPTERS))
def test_prompt_starting_with_a_dash_stays_an_argument(cli: str, workspace: Path):
    spec = spec_for(cli, workspace, prompt="- fix the bug\n- add a test")
    argv = ADAPTERS[cli].invocation(spec).argv
    assert " - fix the bug\n- add a test" in argv
    assert "- fix the bug\n- add a test" not in argv


def test_claude_invocation(workspace: Path):
    spec = spec_for("claude", workspace)
    invocation = ADAPTERS["claude"].invocation(spec)
    assert invocation.argv == [
        "/opt/bin/claude",
        "-p",
        "say hello",
        "--output-format",
        "stream-json",
        "--verbose",
        "--include-partial-messages",
        "--dangerously-skip-permissions",
        "--model",
        "fake-model",
    ]
    env = invocation.env
    assert env["IS_SANDBOX"] == "1"  # needed by the bypass flag when running as root
    assert env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:18002"  # no /v1
    assert env["ANTHROPIC_API_KEY"] == SECRET
    assert env["CLAUDE_CODE_MAX_RETRIES"] == "0"
    assert env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1"
    assert env["CLAUDE_CONFIG_DIR"] == str(spec.home / ".claude")

    resumed = ADAPTERS["claude"].invocation(
        replace(spec, resume_id="5580faf0", system_prompt="-Be brief.")
    )
    argv = resumed.argv
    assert argv[argv.index("--resume") + 1] == "5580faf0"
    assert "--append-system-prompt=-Be brief." in argv


def test_codex_invocation_new_and_resumed(workspace: Path):
    spec = spec_for("codex", workspace, system_prompt='Say "hi"')
    argv = ADAPTERS["codex"].invocation(spec).argv
    assert argv == [
        "/opt/bin/codex",
        "exec",
        "--json",
        "--skip-git-repo-check",
        "--dangerously-bypass-approvals-and-sandbox",
        "-m",
        "fake-model",
        "-c",
        'developer_instructions="Say \\"hi\\""',
        "-C",
        str(spec.cwd),
        "say hello",
    ]
    # The -c value is TOML: it must read back as the original text.
    assert tomllib.loads(argv[8])["developer_instructions"] == 'Say "hi"'

    resumed = ADAPTERS["codex"].invocation(replace(spec, resume_id="01a20c10-9262"))
    assert resumed.argv[:5] == ["/opt/bin/codex", "exec", "resume", "01a20c10-9262", "say hello"]
    assert resumed.argv[resumed.argv.index("-m") + 1] == "fake-model"
    assert "--json" in resumed.argv
    assert "-C" not in resumed.argv  # `exec resume` has no -C; the runner's cwd applies

    env = ADAPTERS["codex"].invocation(spec).env
    assert env["CODEX_HOME"] == str(spec.home / ".codex")
    assert env["VWM_PROVIDER_API_KEY"] == SECRET


def test_gemini_invocation(workspace: Path):
    spec = spec_for("gemini", workspace, resume_id="cc7aa6b8")
    invocation = ADAPTERS["gemini"].invocation(spec)
    assert invocation.argv == [
        "/opt/bin/gemini",
        "-p",
        "say hello",
        "--skip-trust",
        "--yolo",
        "--output-format",
        "stream-json",
        "-m",
        "fake-model",
        "--resume",
        "cc7aa6b8",
    ]
    assert invocation.env["GEMINI_CLI_HOME"] == str(spec.home)
    assert invocation.env["GEMINI_API_KEY"] == SECRET
    assert invocation.env["GOOGLE_GEMINI_BASE_URL"] == "http://127.0.0.1:18002"
    assert "GEMINI_SYSTEM_MD" not in invocation.env  # it would replace the whole system prompt


def test_opencode_invocation(workspace: Path):
    spec = spec_for("opencode", workspace, resume_id="ses_1")
    invocation = ADAPTERS["opencode"].invocation(spec)
    assert invocation.argv == [
        "/opt/bin/opencode",
        "run",
        "--format",
        "json",
        "--dir",
        str(spec.cwd),
        "-m",
        "vwm/fake-model",
        "--session",
        "ses_1",
        "--auto",
        "say hello",
    ]
    env = invocation.env
    for name in ("MODELS_FETCH", "AUTOUPDATE", "LSP_DOWNLOAD"):
        assert env[f"OPENCODE_DISABLE_{name}"] == "1"
    assert env["npm_config_offline"] == "true"  # else it installs a plugin from the registry
    assert env["XDG_DATA_HOME"] == str(spec.home / ".local" / "share")


@pytest.mark.parametrize("cli", sorted(ADAPTERS))
def test_without_a_provider_no_endpoint_or_key_is_set(cli: str, workspace: Path):
    spec = spec_for(cli, workspace, provider=None, model=None)
    ADAPTERS[cli].write_config(spec)
    env = ADAPTERS[cli].invocation(spec).env
    for name in (
        "ANTHROPIC_BASE_URL",
        "ANTHROPIC_API_KEY",
        "GEMINI_API_KEY",
        "GOOGLE_GEMINI_BASE_URL",
        "VWM_PROVIDER_API_KEY",
    ):
        assert name not in env
    codex_toml = spec.home / ".codex" / "config.toml"
    if codex_toml.exists():
        config = tomllib.loads(codex_toml.read_text())
        assert "model_providers" not in config and "model_provider" not in config
        assert config["analytics"]["enabled"] is False  # never phones home
    opencode_json = spec.home / ".config" / "opencode" / "opencode.json"
    if opencode_json.exists():
        assert "provider" not in json.loads(opencode_json.read_text())


def test_opencode_provider_needs_a_model(workspace: Path):
    spec = spec_for("opencode", workspace, model=None)
    with pytest.raises(AdapterConfigError, match="model"):
        ADAPTERS["opencode"].write_config(spec)


# -- config files ---------------------------------------------------------------------------------


def _files(home: Path) -> dict[Path, int]:
    return {path: path.stat().st_mtime_ns for path in home.rglob("*") if path.is_file()}


@pytest.mark.parametrize("cli", sorted(ADAPTERS))
def test_write_config_is_idempotent(cli: str, workspace: Path):
    spec = spec_for(cli, workspace, system_prompt="Be brief.")
    spec.instruction_file.write_text("Use tabs.\n")
    ADAPTERS[cli].write_config(spec)
    for path in _files(spec.home):  # an old mtime makes any rewrite visible, whatever the clock
        os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    before = _files(spec.home)
    ADAPTERS[cli].write_config(spec)
    assert _files(spec.home) == before
    assert spec.home.is_dir()
    assert (spec.home / "tmp").is_dir()


def test_codex_config_toml_points_at_the_provider(workspace: Path):
    spec = spec_for("codex", workspace)
    spec.instruction_file.write_text("Use tabs.\n")
    ADAPTERS["codex"].write_config(spec)
    text = (spec.home / ".codex" / "config.toml").read_text()
    config = tomllib.loads(text)
    provider = config["model_providers"][config["model_provider"]]
    assert provider["base_url"] == "http://127.0.0.1:18002/v1"
    assert provider["wire_api"] == "responses"
    assert provider["env_key"] == "VWM_PROVIDER_API_KEY"
    assert provider["request_max_retries"] <= 1  # fail fast, not minutes of retries
    # Analytics and plugin sync would reach chatgpt.com and github.com.
    assert config["analytics"]["enabled"] is False
    assert config["features"]["plugins"] is False
    assert SECRET not in text
    # Codex reads AGENTS.md only up to the git root: the global copy carries the instructions.
    assert (spec.home / ".codex" / "AGENTS.md").read_text() == "Use tabs.\n"


def test_instruction_copy_follows_the_instruction_file(workspace: Path):
    spec = spec_for("codex", workspace)
    copy = spec.home / ".codex" / "AGENTS.md"
    spec.instruction_file.write_text("v1\n")
    ADAPTERS["codex"].write_config(spec)
    spec.instruction_file.write_text("v2\n")
    ADAPTERS["codex"].write_config(spec)
    assert copy.read_text() == "v2\n"
    spec.instruction_file.unlink()
    ADAPTERS["codex"].write_config(spec)
    assert not copy.exists()


def test_gemini_settings_and_context(workspace: Path):
    spec = spec_for("gemini", workspace, system_prompt="Answer in French.")
    spec.instruction_file.write_text("Use tabs.\n")
    ADAPTERS["gemini"].write_config(spec)
    settings = json.loads((spec.home / ".gemini" / "settings.json").read_text())
    assert settings["security"]["auth"]["selectedType"] == "gemini-api-key"
    assert settings["general"]["maxAttempts"] == 1
    assert settings["general"]["retryFetchErrors"] is False
    assert settings["general"]["disableAutoUpdate"] is True
    assert settings["privacy"]["usageStatisticsEnabled"] is False
    assert settings["telemetry"]["enabled"] is False
    # The system prompt joins the instructions in the global context file.
    context = (spec.home / ".gemini" / "GEMINI.md").read_text()
    assert context == "Use tabs.\n\nAnswer in French.\n"


def test_opencode_json(workspace: Path):
    spec = spec_for("opencode", workspace, system_prompt="Be brief.")
    ADAPTERS["opencode"].write_config(spec)
    path = spec.home / ".config" / "opencode" / "opencode.json"
    text = path.read_text()
    config = json.loads(text)
    provider = config["provider"]["vwm"]
    assert provider["npm"] == "@ai-sdk/openai-compatible"
    assert provider["options"]["baseURL"] == "http://127.0.0.1:18002/v1"
    assert provider["options"]["apiKey"] == "{env:VWM_PROVIDER_API_KEY}"
    assert provider["models"]["fake-model"]["tool_call"] is True
    assert config["model"] == config["small_model"] == "vwm/fake-model"
    assert config["instructions"][0] == str(spec.instruction_file)
    assert Path(config["instructions"][1]).read_text() == "Be brief.\n"
    assert SECRET not in text


def test_opencode_on_the_vendors_endpoints_points_its_own_providers_at_the_meter(
    workspace: Path,
):
    """No provider URL: the meter forwards to each vendor, and opencode keeps its built-in
    providers and the `vendor/model` name, with only their address and key changed."""
    meter = ProviderConfig(base_url="http://127.0.0.1:18003", api_key=SECRET, custom=False)
    spec = spec_for("opencode", workspace, model="anthropic/claude-x", provider=meter)
    ADAPTERS["opencode"].write_config(spec)
    text = (spec.home / ".config" / "opencode" / "opencode.json").read_text()
    config = json.loads(text)
    assert config["provider"] == {
        vendor: {
            "options": {
                "baseURL": f"http://127.0.0.1:18003{path}",
                "apiKey": "{env:VWM_PROVIDER_API_KEY}",
            }
        }
        for vendor, path in (("anthropic", "/v1"), ("openai", "/v1"), ("google", "/v1beta"))
    }
    assert "model" not in config
    invocation = ADAPTERS["opencode"].invocation(spec)
    assert invocation.argv[invocation.argv.index("-m") + 1] == "anthropic/claude-x"
    assert invocation.env["VWM_PROVIDER_API_KEY"] == SECRET
    assert SECRET not in text


def test_claude_reads_the_workspace_claude_md_by_walking_up(workspace: Path):
    spec = spec_for("claude", workspace)
    # No copy is needed: the instruction file sits in an ancestor of the CLI's cwd.
    assert spec.instruction_file.parent in spec.cwd.parents
    ADAPTERS["claude"].write_config(spec)
    assert (spec.home / ".claude").is_dir()
