"""The layers of the design are enforced, not hoped for: `functions` and `harness` never import
each other, `eventing` (the shared contract) imports neither, and inside each side a module imports
only from the layers below its own. Contracts live in pyproject.toml."""

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_hold():
    lint_imports = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run(
        [str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 5 kept, 0 broken" in result.stdout


def _lint_copy(tmp_path: Path, sneak: Callable[[Path], None]) -> subprocess.CompletedProcess[str]:
    """lint-imports on a copy of the tree that `sneak` changed."""
    for package in ("harness", "functions", "eventing"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("clis"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    sneak(tmp_path)
    lint_imports = Path(sys.executable).parent / "lint-imports"
    return subprocess.run(
        [str(lint_imports), "--no-cache"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )


def _append(path: Path, line: str) -> None:
    path.write_text(path.read_text() + line)


def test_contract_checker_catches_a_forbidden_import(tmp_path):
    """The checker itself works: a copy of the tree with harness importing functions fails."""
    result = _lint_copy(
        tmp_path, lambda root: (root / "harness" / "sneaky.py").write_text("import functions\n")
    )
    assert result.returncode != 0
    assert "BROKEN" in result.stdout


@pytest.mark.parametrize(
    ("module", "upward", "contract"),
    [
        ("functions/db/errors.py", "functions.sessions", "control plane's layers"),
        ("functions/http.py", "functions.context", "control plane's layers"),
        ("harness/workspace.py", "harness.jobs", "harness's layers"),
        ("harness/errors.py", "harness.app", "harness's layers"),
    ],
)
def test_layer_contracts_catch_an_upward_import(tmp_path, module, upward, contract):
    """A lazy import from a low layer to a high one (the kind that slips in) breaks its contract."""
    sneak = f"\n\ndef _sneaky() -> None:\n    import {upward}  # noqa\n"
    result = _lint_copy(tmp_path, lambda root: _append(root / module, sneak))
    assert result.returncode != 0
    broken = [line for line in result.stdout.splitlines() if "BROKEN" in line or contract in line]
    assert any(contract in line for line in broken), result.stdout
    importer = module.removesuffix(".py").replace("/", ".")
    assert f"- {importer} -> {upward} (l." in result.stdout, result.stdout
