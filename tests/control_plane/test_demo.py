"""`vwm demo` runs the whole product offline through the SDK: fake provider, embedded control
plane, a real CLI, a streamed prompt that edits the session repo, the end, and telemetry."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.cli


def test_vwm_demo_runs_offline_end_to_end(tmp_path):
    env = {key: value for key, value in os.environ.items() if not key.startswith("VWM_")}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    result = subprocess.run(
        [sys.executable, "-m", "vwm", "demo", "--cli", "claude"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "done: wrote hello.txt" in output
    assert "→ Write" in output  # the tool call was shown as it streamed
    assert "hello.txt" in result.stdout.split("VWM: session end", 1)[1]  # in the pushed commit
    telemetry = [line for line in result.stdout.splitlines() if line.startswith("telemetry: job")]
    assert telemetry and "(reported)" in telemetry[0], result.stdout
    # Money, rounded (see vwm.cli.output.usd), or "cost unknown": never a float's noise or None.
    assert re.search(r"; (\$\d+\.\d{2,7} \(reported\)|cost unknown)$", telemetry[0]), telemetry
    assert "None" not in telemetry[0]
