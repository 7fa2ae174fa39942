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
    assert "web console: http://127.0.0.1:8000/ui/" in text


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


def test_runtimes_whose_credential_variable_is_unset_are_named_at_start(tmp_path: Path) -> None:
    from functions.db.engine import make_engine, session_factory, transaction
    from functions.db.repositories import Runtimes
    from functions.embedded import missing_credential_warnings, prepare

    database_url = f"sqlite:///{tmp_path / 'data' / 'vwm.db'}"
    prepare(database_url)
    engine = make_engine(database_url)
    with transaction(session_factory(engine)) as session:
        for name, ref in (("a", "KEY_A"), ("b", "KEY_A"), ("c", "KEY_C"), ("d", None)):
            Runtimes(session).add(name=name, cli="claude", cli_version="1", credential_ref=ref)
    engine.dispose()

    warnings = missing_credential_warnings(database_url, {"KEY_C": "set"})

    assert len(warnings) == 1
    assert warnings[0].startswith("KEY_A is not set, and runtimes a, b name it as credential_ref")
    assert "export KEY_A=" in warnings[0] and "start it again" in warnings[0]
    assert missing_credential_warnings(database_url, {"KEY_A": "", "KEY_C": "x"}) == []
