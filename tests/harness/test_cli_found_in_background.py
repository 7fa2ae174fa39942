"""The image CLI's ``--version`` (`harness.cli_install.PinnedCli.find`) runs while the harness
starts: the harness answers before the CLI has said its version, and what needs the CLI
(bootstrap, then every job) waits for that answer."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx

from functions.runtime.procs import processes_in
from tests.support.harness_process import HarnessProcess
from tests.support.npm_registry import fake_cli

VERSION = "1.0.0"

# Answers --version only once the test opens the gate (a minute at most), else as the fake CLI.
GATED_CLI = """#!/bin/sh
if [ "$1" = "--version" ]; then
  i=0
  while [ ! -e "{gate}" ] && [ "$i" -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
fi
exec "{fake}" "$@"
"""


def gated_harness(tmp_path: Path) -> tuple[HarnessProcess, Path]:
    fake = tmp_path / "fake-cli"
    fake.write_text(fake_cli(VERSION))
    fake.chmod(0o755)
    gate = tmp_path / "gate"
    cli = tmp_path / "claude"
    cli.write_text(GATED_CLI.format(gate=gate, fake=fake))
    cli.chmod(0o755)
    process = HarnessProcess(
        tmp_path / "workspace",
        "claude",
        {"VWM_CLI_BIN": str(cli), "VWM_CLI_VERSION": VERSION},
        tmp_path / "harness.log",
    )
    return process, gate


def test_the_harness_answers_before_its_cli_has_said_its_version_and_bootstrap_waits_for_it(
    tmp_path: Path,
) -> None:
    process, gate = gated_harness(tmp_path)
    process.start()  # /healthz answers: the start did not wait for --version
    try:
        assert processes_in(process.workspace), "the CLI's --version should be at the gate"
        answers: list[httpx.Response] = []

        def post_bootstrap() -> None:
            with process.client() as client:
                answers.append(client.post("/v1/bootstrap", json={}))

        bootstrapping = threading.Thread(target=post_bootstrap)
        bootstrapping.start()
        bootstrapping.join(timeout=1.0)
        assert bootstrapping.is_alive(), f"bootstrap did not wait for the CLI: {answers}"
        gate.touch()
        bootstrapping.join(timeout=60)
        assert answers and answers[0].status_code == 200, answers and answers[0].text
        assert not (process.workspace / ".vwm" / "cli").exists()  # the image's CLI fits
        with process.client() as client:
            job = client.post("/v1/jobs", json={"prompt": "hello"})
        assert job.status_code == 200, job.text
        assert job.json()["status"] == "succeeded", job.text
        assert job.json()["summary"]["final_text"] == f"fake cli {VERSION}"
    finally:
        gate.touch()
        process.stop()
