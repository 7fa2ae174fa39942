"""What `vwm up` says when it starts: the next step (and how to reach the `vwm` command, which
`./task up` leaves in the virtualenv's bin folder)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from functions.embedded import next_steps


def _vwm_in(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "python").touch()
    (folder / "vwm").touch(mode=0o755)
    return folder


def test_the_next_step_says_how_to_reach_vwm_when_it_is_not_on_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = _vwm_in(tmp_path / ".venv" / "bin")
    monkeypatch.setattr(sys, "executable", str(bin_dir / "python"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", "/nonexistent")

    text = "\n".join(next_steps("http://127.0.0.1:8000", "vwm_abc"))

    assert 'export PATH="$PWD/.venv/bin:$PATH"' in text
    assert "VWM_URL=http://127.0.0.1:8000" in text
    assert "VWM_API_KEY=vwm_abc" in text
    assert "not on your PATH" in text
    assert "vwm runtime create" in text


def test_the_next_step_names_no_path_when_vwm_is_on_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = _vwm_in(tmp_path / "bin")
    monkeypatch.setattr(sys, "executable", str(bin_dir / "python"))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}/usr/bin")

    text = "\n".join(next_steps("http://127.0.0.1:8000", None))

    assert "PATH=" not in text
    assert "VWM_API_KEY=vwm_…" in text
    assert "printed on the first start" in text
