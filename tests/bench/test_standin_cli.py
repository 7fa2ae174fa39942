"""The benchmarks' stand-in CLI (bench/standin_cli.py): what it prints is what the real CLI
printed, parsed by the same adapter to the same kind of run, with a session of its own (or the
one it was asked to resume), at the pace it was given."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from bench.standin_cli import (
    CASES,
    CLIS,
    make_launchers,
    manifest,
    recorded_session_id,
)
from eventing.cli_versions import reported_version
from harness.adapters import ADAPTERS
from harness.adapters.transcript import replay


@pytest.fixture(scope="module")
def launchers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_launchers(tmp_path_factory.mktemp("standin"), case="tool", pace_s=0.0)


def _run(launcher: Path, argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(launcher), *argv], capture_output=True, text=True, timeout=30)


def _recorded_argv(cli: str, case: str) -> list[str]:
    return manifest()["runs"][f"{cli}/{case}"]["argv"][1:]


@pytest.mark.parametrize("cli", CLIS)
def test_it_reports_the_pinned_version(launchers: dict[str, Path], cli: str) -> None:
    done = _run(launchers[cli], ["--version"])
    assert done.returncode == 0
    assert reported_version(done.stdout) == manifest()["clis"][cli]["version"]


@pytest.mark.parametrize("cli", CLIS)
def test_a_run_parses_like_the_real_one_with_a_session_of_its_own(
    launchers: dict[str, Path], cli: str
) -> None:
    first, second = (_run(launchers[cli], _recorded_argv(cli, "tool")) for _ in range(2))
    summaries = []
    for done in (first, second):
        assert done.returncode == 0, done.stderr
        parser = ADAPTERS[cli].new_parser()
        events = replay(parser, [json.loads(line) for line in done.stdout.splitlines()], 0)
        assert any(event.kind == "tool_call" for event in events), cli
        summary = parser.summary
        assert not summary.is_error, summary.error
        summaries.append(summary)
    ids = {summary.cli_session_id for summary in summaries}
    assert len(ids) == 2 and recorded_session_id(cli) not in ids


@pytest.mark.parametrize("cli", CLIS)
def test_a_resumed_run_keeps_the_session_it_resumes(launchers: dict[str, Path], cli: str) -> None:
    recorded = _recorded_argv(cli, "resume")
    wanted = (
        "ses_standintest00000000000000"
        if cli == "opencode"
        else "1d0c2a9e-0000-4000-8000-5e55101d0000"
    )
    argv = [wanted if arg == recorded_session_id(cli) else arg for arg in recorded]
    done = _run(launchers[cli], argv)
    parser = ADAPTERS[cli].new_parser()
    replay(parser, [json.loads(line) for line in done.stdout.splitlines()], done.returncode)
    assert parser.summary.cli_session_id == wanted


def test_the_lines_are_spread_over_the_pace(tmp_path: Path) -> None:
    paced = make_launchers(tmp_path, case="text", pace_s=0.8)["claude"]
    started = time.monotonic()
    with subprocess.Popen(
        [str(paced), *_recorded_argv("claude", "text")], stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None
        arrivals = [time.monotonic() - started for _ in proc.stdout]
    assert len(arrivals) > 2
    # The replay takes at least its pace, spread out: the last line comes a pace after the first.
    assert arrivals[-1] - arrivals[0] >= 0.8


def test_every_cli_has_every_case_recorded() -> None:
    for cli in CLIS:
        for case in CASES:
            assert f"{cli}/{case}" in manifest()["runs"], (cli, case)


def test_each_run_logs_its_cpu_in_its_home(tmp_path: Path) -> None:
    from bench.standin_cli import cpu_seconds

    launcher = make_launchers(tmp_path / "bin", case="text", pace_s=0.0)["gemini"]
    homes = [tmp_path / "data" / name / "home" for name in ("a", "b")]
    for home in homes:
        home.mkdir(parents=True)
        env = {"PATH": "/usr/bin:/bin", "HOME": str(home)}
        argv = [str(launcher), *_recorded_argv("gemini", "text")]
        subprocess.run(argv, env=env, check=True, capture_output=True, timeout=30)
    logged = [float((home / ".standin-cpu.log").read_text()) for home in homes]
    assert all(seconds > 0 for seconds in logged)
    assert cpu_seconds(tmp_path / "data") == pytest.approx(sum(logged))
