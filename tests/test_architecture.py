"""The layers of the design are enforced, not hoped for: `functions` and `harness` never import
each other, and `eventing` (the shared contract) imports neither. Contracts live in pyproject.toml."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_hold():
    lint_imports = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run(
        [str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 3 kept, 0 broken" in result.stdout


def test_contract_checker_catches_a_forbidden_import(tmp_path):
    """The checker itself works: a copy of the tree with harness importing functions fails."""
    import shutil

    for package in ("harness", "functions", "eventing"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("clis"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "harness" / "sneaky.py").write_text("import functions\n")
    lint_imports = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run(
        [str(lint_imports), "--no-cache"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode != 0
    assert "BROKEN" in result.stdout
