"""``VWM_PROVIDER_BASE_URL`` is the provider's root however it was set: a trailing API version is
stripped before any adapter appends its own path, so no CLI is sent to ``/v1/v1/...``; a URL no
adapter could append to stops the harness at start, without echoing the URL."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from harness.adapters import ADAPTERS
from harness.adapters.base import RunSpec
from harness.settings import HarnessSettings, SettingsError


def provider_url(url: str, cli: str = "claude") -> str:
    settings = HarnessSettings.from_env(
        {"VWM_CLI": cli, "VWM_CLI_BIN": cli, "VWM_PROVIDER_BASE_URL": url}
    )
    assert settings.cli.provider is not None
    return settings.cli.provider.base_url


@pytest.mark.parametrize(
    ("given", "root"),
    [
        ("http://127.0.0.1:18000", "http://127.0.0.1:18000"),
        ("http://127.0.0.1:18000/", "http://127.0.0.1:18000"),
        ("http://127.0.0.1:18000/v1", "http://127.0.0.1:18000"),
        ("http://127.0.0.1:18000/v1/", "http://127.0.0.1:18000"),
        ("https://generativelanguage.example/v1beta", "https://generativelanguage.example"),
        ("https://gw.example/openai/v1", "https://gw.example/openai"),
    ],
)
def test_the_root_is_kept_without_its_version(given: str, root: str) -> None:
    assert provider_url(given) == root


@pytest.mark.parametrize(
    "url",
    [
        "https://gw.example/v1?key=secret",
        "https://gw.example/#secret",
        "https://user:secret@gw.example",
        "https://gw.example/v1/chat/completions",
        "gw.example/v1",
    ],
)
def test_a_url_that_is_not_a_root_stops_the_start(url: str) -> None:
    with pytest.raises(SettingsError, match="VWM_PROVIDER_BASE_URL") as raised:
        provider_url(url)
    assert "secret" not in str(raised.value)


def spec(tmp_path: Path, cli: str, url: str) -> RunSpec:
    settings = HarnessSettings.from_env(
        {
            "VWM_CLI": cli,
            "VWM_CLI_BIN": cli,
            "VWM_PROVIDER_BASE_URL": url,
            "VWM_PROVIDER_API_KEY": "k",
            "VWM_MODEL": "m",
        }
    )
    cwd = tmp_path / "session_repo"
    cwd.mkdir(exist_ok=True)
    return RunSpec(
        prompt="hi",
        workspace=tmp_path,
        cwd=cwd,
        home=tmp_path / ".cli-home",
        instruction_file=tmp_path / "AGENTS.md",
        binary=cli,
        model=settings.cli.model,
        provider=settings.cli.provider,
    )


def test_every_adapter_gets_the_version_once(tmp_path: Path) -> None:
    """What each CLI is pointed at when the URL was given with ``/v1/``."""
    url = "https://gw.example/openai/v1/"
    claude = spec(tmp_path, "claude", url)
    assert ADAPTERS["claude"].invocation(claude).env["ANTHROPIC_BASE_URL"] == (
        "https://gw.example/openai"
    )
    gemini = spec(tmp_path, "gemini", url)
    assert ADAPTERS["gemini"].invocation(gemini).env["GOOGLE_GEMINI_BASE_URL"] == (
        "https://gw.example/openai"
    )
    codex = spec(tmp_path, "codex", url)
    ADAPTERS["codex"].write_config(codex)
    config = tomllib.loads((codex.home / ".codex" / "config.toml").read_text())
    assert config["model_providers"]["vwm"]["base_url"] == "https://gw.example/openai/v1"
    opencode = spec(tmp_path, "opencode", url)
    ADAPTERS["opencode"].write_config(opencode)
    written = (opencode.home / ".config" / "opencode" / "opencode.json").read_text()
    assert '"baseURL": "https://gw.example/openai/v1"' in written
