"""`eventing.lean_httpx`: the harness and the control plane import httpx without its command-line
client's packages (rich, pygments, click: time and memory in every process), and httpx works."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys
import {module}
import httpx
httpx.Client().close()
print(json.dumps(sorted(name for name in sys.modules if name.split(".")[0] in ("rich", "pygments")
                        or name == "httpx._main")))
"""


@pytest.mark.parametrize("module", ["harness.serve", "harness.pooled", "functions.embedded"])
def test_the_entry_points_leave_httpx_cli_out(module):
    found = subprocess.run(
        [sys.executable, "-c", PROBE.format(module=module)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(found.stdout) == []


def test_without_it_httpx_would_bring_them():
    # The premise: in this environment httpx's CLI packages are installed (the vwm command's
    # rich), so the test above is not passing for want of them.
    import importlib.util

    assert importlib.util.find_spec("rich") is not None
