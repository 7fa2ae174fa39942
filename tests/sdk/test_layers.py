"""The SDK and CLI are clients of the HTTP API. The SDK (`vwm.sdk`, `vwm.errors`) never imports
the server side (`harness`, `functions`, `fake_provider`), not even lazily; it may import
`eventing`, the shared event contract. The command line loads none of the server side either:
`vwm up` and `vwm demo` (`vwm.local`) import it only when they run."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVER_SIDE = {"harness", "functions", "fake_provider", "tests"}
SDK = [
    ROOT / "vwm" / "__init__.py",
    ROOT / "vwm" / "errors.py",
    *(ROOT / "vwm" / "sdk").rglob("*.py"),
]


def imported(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def test_the_sdk_imports_nothing_of_the_server():
    offending = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in SDK
        for name in imported(path)
        if name.split(".")[0] in SERVER_SIDE
    ]
    assert offending == []


def test_the_command_line_loads_nothing_of_the_server():
    probe = (
        "import sys, vwm, vwm.cli\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {sorted(SERVER_SIDE)!r}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
