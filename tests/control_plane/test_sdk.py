"""The Python SDK against the real embedded system: admin, a session used as a context manager,
the three prompt modes, workspace files (and their confinement), typed errors."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import MODELS, make_bare_repo
from vwm import errors
from vwm.local.clis import pinned_version
from vwm.sdk.client import Client

pytestmark = pytest.mark.cli


def test_sdk_drives_a_session_end_to_end(tmp_path, control_plane, fake_provider):
    worker_repo = make_bare_repo(tmp_path / "worker.git", {"README.md": "# knowledge\n"})
    task_repo = make_bare_repo(tmp_path / "task.git", {"README.md": "# task\n"})
    with Client(control_plane.url, control_plane.admin_key) as client:
        client.admin.create_runtime(
            name="claude-fake",
            cli="claude",
            cli_version=pinned_version("claude"),
            default_model=MODELS["claude"],
            provider_base_url=fake_provider.base_url,
            credential_ref="FAKE_PROVIDER_KEY",
        )
        client.admin.create_worker(name="sdk", runtime="claude-fake", repo_url=str(worker_repo))
        with pytest.raises(errors.NotFoundError):
            client.worker("nobody").session()

        with client.worker("sdk").session(session_repo={"url": str(task_repo)}) as session:
            assert session.status == "ready"
            result = session.prompt("write notes.md")
            assert result.ok and result.final_text == "done: wrote notes.md"
            assert session.files.read_text("session_repo/notes.md") == "hello from fake model\n"

            kinds = [event.kind for event in session.stream("say hi")]
            assert kinds[0] == "job_started" and kinds[-1] == "job_finished"
            job = session.submit("say hi")
            assert job.wait(poll_s=0.2, timeout_s=60).ok

            session.files.write("session_repo/data/input.txt", "from the caller\n")
            names = [entry["name"] for entry in session.files.list("session_repo/data")]
            assert names == ["input.txt"]
            for escape in ("../outside.txt", "/etc/passwd", "session_repo/../../x"):
                with pytest.raises(errors.VWMError) as refused:
                    session.files.write(escape, "nope")
                assert 400 <= refused.value.status < 500
            with pytest.raises(errors.AuthError):
                session.files.read(".cli-home/.claude.json")
            session.files.delete("session_repo/data", recursive=True)
            assert "data" not in [e["name"] for e in session.files.list("session_repo")]
        assert session.status == "ended"
        with pytest.raises(errors.ConflictError):
            session.prompt("too late")
    assert not (tmp_path / "outside.txt").exists()
