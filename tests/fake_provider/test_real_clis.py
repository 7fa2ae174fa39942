"""Each real CLI, bare and offline, against the fake provider: it answers, writes files with the
CLI's own tool, fails fast on a bad key, and its own total equals the ledger's counted usage (its
turns), plus its side calls' for a CLI whose total includes them (Gemini CLI's router).

Run them in parallel with `-n 4`; each test starts its CLI once (see clis.py for argv/env/config).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from fake_provider import AUX, FILE_CONTENT, TEXT, Usage
from fake_provider.testing import RunningProvider
from tests.fake_provider.clis import CLI_BIN, CLIS, Cli, CliResult, kill_group, launch, run_cli

pytestmark = pytest.mark.cli


@pytest.fixture(params=sorted(CLIS))
def cli(request: pytest.FixtureRequest) -> Cli:
    if not (CLI_BIN / request.param).exists():
        pytest.fail(f"{request.param} is not installed in {CLI_BIN}; run ./task install")
    return CLIS[request.param]


def new_key(cli: Cli) -> str:
    return f"test-{cli.name}-{uuid.uuid4().hex[:8]}"


def timed(request: pytest.FixtureRequest, result: CliResult) -> CliResult:
    request.node.user_properties.append(("cli_seconds", round(result.seconds, 2)))
    return result


def assert_ledger_matches_the_cli(
    cli: Cli, result: CliResult, provider: RunningProvider, key: str
) -> None:
    calls = provider.ledger.model_calls(key=key)
    assert any(call.counted for call in calls), calls
    assert all(call.status == 200 for call in calls), calls
    side = [call for call in calls if not call.counted]
    assert [call.usage for call in side] == [AUX] * cli.side_calls, side
    counted = provider.ledger.counted_usage(key=key)
    billed = provider.ledger.billed_usage(key=key)
    assert billed == counted + Usage.total(call.usage for call in side)
    reported = cli.reported_usage(result)
    # Side calls report AUX, never zero, so a total that left them in (or out) shows.
    assert reported == (billed if cli.total_includes_side_calls else counted)
    assert reported.output > 0


def test_text_prompt(
    cli: Cli, provider: RunningProvider, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    key = new_key(cli)
    result = timed(
        request, run_cli(cli, "say hello", root=tmp_path, base_url=provider.base_url, api_key=key)
    )
    assert result.exit_code == 0, result.output[-4000:]
    assert cli.final_text(result) == TEXT
    assert_ledger_matches_the_cli(cli, result, provider, key)


def test_write_a_named_file_with_the_clis_own_tool(
    cli: Cli, provider: RunningProvider, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    key = new_key(cli)
    prompt = "create notes.md with a greeting"
    result = timed(
        request, run_cli(cli, prompt, root=tmp_path, base_url=provider.base_url, api_key=key)
    )
    assert result.exit_code == 0, result.output[-4000:]
    assert (result.workspace / "notes.md").read_text() == FILE_CONTENT
    assert cli.final_text(result) == "done: wrote notes.md"
    tool_calls = [
        c for c in provider.ledger.model_calls(key=key) if c.answer["kind"] == "tool_call"
    ]
    assert len(tool_calls) == 1, tool_calls
    assert_ledger_matches_the_cli(cli, result, provider, key)


def test_bad_key_fails_fast_with_a_401(
    cli: Cli, provider: RunningProvider, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    key = f"bad-{uuid.uuid4().hex[:8]}"
    result = timed(
        request,
        run_cli(
            cli, "say hello", root=tmp_path, base_url=provider.base_url, api_key=key, timeout=60
        ),
    )
    assert result.seconds < 30
    assert result.exit_code not in (0, None), result.output[-4000:]
    assert "401" in result.output or "API key" in result.output, result.output[-4000:]
    calls = provider.ledger.model_calls(key=key)
    assert calls and all(call.status == 401 for call in calls)
    assert provider.ledger.counted_usage(key=key) == Usage()


def test_a_slow_answer_keeps_the_cli_waiting_until_cancelled(
    cli: Cli, provider: RunningProvider, tmp_path: Path
) -> None:
    key = new_key(cli)
    proc = launch(cli, "sleep 60", root=tmp_path, base_url=provider.base_url, api_key=key)
    try:
        deadline = time.monotonic() + 90
        while not any(c.counted for c in provider.ledger.model_calls(key=key)):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the CLI never called the provider"
            time.sleep(0.1)
        time.sleep(2)
        assert proc.poll() is None, "the CLI gave up on a stream that was still open"
    finally:
        kill_group(proc)
        proc.communicate()
    (call,) = [c for c in provider.ledger.model_calls(key=key) if c.counted]
    assert call.stream and not call.finished
