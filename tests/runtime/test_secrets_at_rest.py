"""Secrets at rest on the local backend: harness tokens are derived from a key file and never
stored; a token of another key opens nothing; the session folders, logs and key are private and
the harness runs with umask 077; the repo URL policy's local rule reaches the harness."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import httpx
import pytest

from functions.private_files import secure_data_dir
from functions.runtime import InvalidHarnessSpec, RuntimeHandle
from functions.runtime.errors import TokenKeyUnavailable
from functions.runtime.local import LocalBackend
from functions.runtime.tokens import KEY_FILE_NAME, TokenKey
from tests.runtime.conftest import environ
from tests.runtime.contract import READY_S, Sessions


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def sessions(local_sessions: Sessions) -> Sessions:
    return local_sessions


def proc_status(pid: int) -> str:
    return Path(f"/proc/{pid}/status").read_text()


def loosen(data_dir: Path) -> Path:
    """A data folder as an older version left it: readable by everyone. Returns its old log."""
    (data_dir / "logs").mkdir(parents=True, mode=0o755)
    (data_dir / "sessions").mkdir(mode=0o755)
    data_dir.chmod(0o755)
    old_log = data_dir / "logs" / "s-private.log"
    old_log.write_text("an earlier launch\n")
    old_log.chmod(0o644)
    return old_log


def test_a_token_is_an_hmac_of_the_session_id_under_the_key() -> None:
    key, other = TokenKey(b"k" * 32, "test"), TokenKey(b"o" * 32, "test")

    assert key.token("s-1") == TokenKey(b"k" * 32, "elsewhere").token("s-1")
    assert key.token("s-1") != key.token("s-2")
    assert key.token("s-1") != other.token("s-1")
    assert len(key.token("s-1")) == 43 and "=" not in key.token("s-1")
    assert "kkkk" not in repr(key)


def test_the_key_file_is_made_once_private_and_reused(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    first = TokenKey.in_folder(folder)
    key_file = folder / KEY_FILE_NAME

    assert mode(key_file) == 0o600
    assert len(key_file.read_bytes().strip()) >= 32
    assert TokenKey.in_folder(folder).token("s") == first.token("s")
    assert [p.name for p in folder.iterdir()] == [KEY_FILE_NAME]  # no file left aside
    key_file.chmod(0o644)
    assert TokenKey.in_folder(folder).token("s") == first.token("s")
    assert mode(key_file) == 0o600


def test_an_operator_key_file_that_is_missing_or_short_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TokenKeyUnavailable) as missing:
        TokenKey.from_file(tmp_path / "absent.key")
    assert missing.value.code == "token_key_unavailable"
    assert "VWM_TOKEN_KEY_FILE" in missing.value.message
    short = tmp_path / "short.key"
    short.write_text("too short\n")
    with pytest.raises(TokenKeyUnavailable, match="at least 32"):
        TokenKey.from_file(short)
    good = tmp_path / "good.key"
    good.write_text("a" * 40 + "\n")
    assert TokenKey.from_file(good).token("s") == TokenKey(b"a" * 40, "x").token("s")


async def test_no_token_in_the_handle_and_another_keys_token_opens_nothing(
    local_backend: LocalBackend, sessions: Sessions, make_spec, data_dir: Path
) -> None:
    handle, endpoint = await sessions.ready(make_spec("s-keyed"))
    assert endpoint.token == TokenKey.in_folder(data_dir).token("s-keyed")
    assert environ(handle.state["pid"])["VWM_SESSION_TOKEN"] == endpoint.token
    assert endpoint.token not in json.dumps(handle.to_dict())

    stranger = LocalBackend(data_dir, token_key=TokenKey(os.urandom(32), "another key"))
    forged = stranger.endpoint(handle)
    assert forged.url == endpoint.url and forged.token != endpoint.token
    async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
        for token, expected in ((forged.token, 401), (endpoint.token, 200)):
            answer = await http.get(
                f"{endpoint.url}/v1/files",
                params={"path": "."},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert answer.status_code == expected


async def test_a_harness_that_refuses_the_token_is_replaced_at_once(
    local_backend: LocalBackend, sessions: Sessions, make_spec, data_dir: Path
) -> None:
    """A harness started before tokens were derived (or under an old key) holds a token the
    control plane no longer has: `ensure_running` replaces it without waiting out the grace,
    and a handle that still carries a stored token loses it."""
    spec = make_spec("s-rekeyed")
    handle, _ = await sessions.ready(spec)
    old = RuntimeHandle(handle.session_id, "local", {**handle.state, "token": "stored-before"})
    rekeyed = LocalBackend(
        data_dir, token_key=TokenKey(os.urandom(32), "new key"), startup_grace_s=120.0
    )
    sessions.backend = rekeyed

    started = time.monotonic()
    replaced = sessions.track(await rekeyed.ensure_running(old, spec))

    assert time.monotonic() - started < 30  # far less than the 120 s grace
    assert replaced.state["pid"] != handle.state["pid"]
    assert "token" not in replaced.state
    endpoint = await rekeyed.wait_ready(replaced, READY_S)
    assert environ(replaced.state["pid"])["VWM_SESSION_TOKEN"] == endpoint.token

    kept = await rekeyed.ensure_running(
        RuntimeHandle(replaced.session_id, "local", {**replaced.state, "token": "stale"}), spec
    )
    assert kept == replaced  # healthy: kept, and the stale stored token dropped


async def test_session_folders_logs_and_key_are_private_even_if_they_were_not(
    local_backend: LocalBackend, sessions: Sessions, make_spec, data_dir: Path
) -> None:
    old_log = loosen(data_dir)

    handle, _ = await sessions.ready(make_spec("s-private"))

    assert mode(data_dir) == 0o700
    for folder in ("sessions", "sessions/s-private", "logs"):
        assert mode(data_dir / folder) == 0o700, folder
    assert mode(old_log) == 0o600
    assert "an earlier launch" in old_log.read_text()
    assert mode(data_dir / KEY_FILE_NAME) == 0o600
    assert "Umask:\t0077" in proc_status(handle.state["pid"])
    made_by_harness = Path(handle.state["workspace"]) / ".vwm"
    assert mode(made_by_harness) & 0o077 == 0


def test_secure_data_dir_tightens_what_the_control_plane_made_and_nothing_inside(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    workspace = data / "sessions" / "s1" / "workspace"
    workspace.mkdir(parents=True)
    shared = workspace / "shared.txt"  # the agent's business
    database = data / "vwm.sqlite3"
    for path in (shared, database, data / "vwm.sqlite3-wal", data / "logs" / "s1.log"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
        path.chmod(0o644)
    for folder in (data, data / "sessions", data / "sessions" / "s1", data / "logs", workspace):
        folder.chmod(0o755)

    tightened = secure_data_dir(data, database)

    assert {p.relative_to(data).as_posix() for p in tightened} == {
        ".",
        "vwm.sqlite3",
        "vwm.sqlite3-wal",
        "logs",
        "logs/s1.log",
        "sessions",
        "sessions/s1",
    }
    assert mode(database) == 0o600 and mode(data / "sessions" / "s1") == 0o700
    assert mode(shared) == 0o644 and mode(workspace) == 0o755
    assert secure_data_dir(data, database) == []


async def test_the_local_repo_rule_reaches_the_harness_only_when_allowed(
    local_backend: LocalBackend, sessions: Sessions, make_spec
) -> None:
    refused, _ = await sessions.ready(make_spec("s-no-local"))
    allowed, _ = await sessions.ready(make_spec("s-local", git_allow_local=True))

    assert "VWM_GIT_ALLOW_LOCAL" not in environ(refused.state["pid"])
    assert environ(allowed.state["pid"])["VWM_GIT_ALLOW_LOCAL"] == "1"
    with pytest.raises(InvalidHarnessSpec):
        await local_backend.provision(make_spec("s-sneaky", extra_env={"VWM_GIT_ALLOW_LOCAL": "1"}))
