"""Secrets at rest in `vwm up`'s data folder, over real HTTP with real harnesses (no agent runs):
the folder and every file the control plane makes are private, a looser folder left by an older
version is tightened (and the log says so), and no harness token is anywhere in the database
file after sessions ran, were ended and the control plane restarted."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from functions.runtime.tokens import KEY_FILE_NAME, TokenKey
from tests.control_plane.conftest import ControlPlane, harness_pids, kill_harnesses
from tests.e2e.conftest import make_bare_repo
from vwm.local.clis import pinned_version


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# These tests read each harness's token from its environment on /proc, where a harness started
# cold has it; a warm pool member has nothing of its session there (tests/runtime/test_warm_pool).
COLD = {"VWM_WARM_HARNESSES": "0"}


def session_token(pid: int) -> str:
    for item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
        if item.startswith(b"VWM_SESSION_TOKEN="):
            return item.split(b"=", 1)[1].decode()
    raise AssertionError(f"harness {pid} has no token")


def test_the_data_folder_is_private_and_holds_no_harness_token(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    (data_dir / "logs").mkdir(parents=True)
    stale_log = data_dir / "logs" / "older.log"
    stale_log.write_text("from an older version\n")
    for path, loose in ((data_dir, 0o755), (data_dir / "logs", 0o755), (stale_log, 0o644)):
        path.chmod(loose)
    worker_repo = make_bare_repo(tmp_path / "worker.git", {"README.md": "# knowledge\n"})
    task_repo = make_bare_repo(tmp_path / "task.git", {"README.md": "# task\n"})
    plane = ControlPlane(data_dir, COLD)
    plane.start()
    try:
        assert "made it 0700 and its files 0600" in plane.log()
        with plane.client() as client:
            client.post(
                "/v1/admin/runtimes",
                json={"name": "c", "cli": "claude", "cli_version": pinned_version("claude")},
            ).raise_for_status()
            client.post(
                "/v1/admin/workers",
                json={"name": "w", "runtime": "c", "repo_url": str(worker_repo)},
            ).raise_for_status()
            ids = []
            for _ in range(2):
                created = client.post(
                    "/v1/sessions", json={"worker": "w", "session_repo": {"url": str(task_repo)}}
                )
                assert created.status_code == 201, (created.text, plane.log())
                ids.append(created.json()["id"])
            key = TokenKey.in_folder(data_dir)
            tokens = sorted(session_token(pid) for pid in harness_pids(data_dir))
            assert tokens == sorted(key.token(session_id) for session_id in ids)
            assert_private_and_tokenless(data_dir, tokens)  # -wal and -shm while running
            assert client.delete(f"/v1/sessions/{ids[0]}").json()["status"] == "ended"

        plane.stop()  # a restart: the live session's harness is found again with its token
        plane.start()
        with plane.client() as client:
            listing = client.get(f"/v1/sessions/{ids[1]}/files", params={"path": "."})
            assert listing.status_code == 200, listing.text
            settings = client.put("/v1/admin/settings/allow_local_repos", json={"value": True})
            assert settings.status_code == 200
    finally:
        plane.stop()
        kill_harnesses(data_dir)

    assert mode(data_dir) == 0o700
    assert mode(data_dir / KEY_FILE_NAME) == 0o600
    assert mode(stale_log) == 0o600
    for folder in ("logs", "sessions", f"sessions/{ids[1]}"):
        assert mode(data_dir / folder) == 0o700, folder
    for log in (data_dir / "logs").iterdir():
        assert mode(log) == 0o600, log
    assert_private_and_tokenless(data_dir, tokens)


def assert_private_and_tokenless(data_dir: Path, tokens: list[str]) -> None:
    database_files = list(data_dir.glob("vwm.sqlite3*"))
    assert data_dir / "vwm.sqlite3" in database_files
    for path in database_files:
        assert mode(path) == 0o600, path
        content = path.read_bytes()
        assert all(token.encode() not in content for token in tokens), path


def test_an_operator_key_file_is_used_and_a_short_one_stops_the_start(tmp_path: Path) -> None:
    key_file = tmp_path / "secret" / "token.key"  # as a mounted Kubernetes Secret
    key_file.parent.mkdir()
    key_file.write_text("too short\n")
    data_dir = tmp_path / "data"
    plane = ControlPlane(data_dir, {**COLD, "VWM_TOKEN_KEY_FILE": str(key_file)})
    with pytest.raises(RuntimeError, match="needs at least 32"):
        plane.start()
    assert plane.proc is not None and plane.proc.wait(timeout=10) == 2
    assert "Traceback" not in plane.log()

    key_file.write_text("k" * 48 + "\n")
    plane = ControlPlane(data_dir, {**COLD, "VWM_TOKEN_KEY_FILE": str(key_file)})
    plane.start()
    try:
        with plane.client() as client:
            client.post(
                "/v1/admin/runtimes",
                json={"name": "c", "cli": "claude", "cli_version": pinned_version("claude")},
            ).raise_for_status()
            worker = {"name": "w", "runtime": "c", "repo_url": str(make_repo(tmp_path))}
            client.post("/v1/admin/workers", json=worker).raise_for_status()
            created = client.post("/v1/sessions", json={"worker": "w"})
            assert created.status_code == 201, (created.text, plane.log())
            (pid,) = harness_pids(data_dir)
            assert session_token(pid) == TokenKey.from_file(key_file).token(created.json()["id"])
    finally:
        plane.stop()
        kill_harnesses(data_dir)
    assert not (data_dir / KEY_FILE_NAME).exists()  # no second key beside the operator's


def make_repo(tmp_path: Path) -> Path:
    return make_bare_repo(tmp_path / "worker.git", {"README.md": "# knowledge\n"})
