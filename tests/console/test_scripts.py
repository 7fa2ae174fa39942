"""Every console script parses as an ES module (Node's parser): a syntax error is named here with
its file and line, before a browser test meets it as a blank page."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from functions.console.app import STATIC_DIR

SCRIPTS = sorted((STATIC_DIR / "js").rglob("*.js"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(STATIC_DIR)))
def test_the_script_parses_as_a_module(script: Path, tmp_path: Path) -> None:
    node = shutil.which("node")
    assert node, "node is needed (the agent CLIs run on it; ./task install checks for it)"
    module = tmp_path / f"{script.stem}.mjs"  # .mjs: parsed as a module whatever Node's default
    module.write_bytes(script.read_bytes())
    checked = subprocess.run([node, "--check", str(module)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


def test_there_are_scripts_to_check() -> None:
    assert {"app.js", "api.js", "sse.js", "dom.js"} <= {p.name for p in SCRIPTS}
