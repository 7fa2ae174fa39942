"""The SDK and CLI are clients of the HTTP API: `vwm` may import `eventing` (the shared event
contract) but never `harness` or `functions`."""

from __future__ import annotations

import ast
from pathlib import Path

VWM = Path(__file__).resolve().parents[2] / "vwm"
FORBIDDEN = {"harness", "functions", "tests"}


def test_vwm_imports_neither_harness_nor_functions():
    offending = []
    for path in VWM.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offending += [
                f"{path.relative_to(VWM.parent)}: {n}"
                for n in names
                if n.split(".")[0] in FORBIDDEN
            ]
    assert offending == []
