"""Learnings in the SDK (`client.telemetry.learnings`, `VWSession.end(learn=False)`) and the
command line (`vwm learnings`, `vwm session end --no-learn`), against the real control plane:
sessions of a worker with auto-learning on a real Claude Code and the fake model provider."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import Result

from functions.db.engine import make_engine, session_factory, transaction
from functions.db.models import Learning as LearningRow
from tests.e2e.conftest import MODELS, make_bare_repo
from tests.support.control_plane import ControlPlane
from vwm import Client, ValidationError
from vwm.local.clis import pinned_version

pytestmark = [pytest.mark.cli, pytest.mark.xdist_group("sdk_live_control_plane")]

Vwm = Callable[..., Result]
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def learner(live: Client, live_provider: Any, tmp_path: Path) -> str:
    """A worker with auto-learning in review mode, on Claude Code and the fake provider."""
    repo = make_bare_repo(tmp_path / "kb.git", {"README.md": "# knowledge\n"})
    if "claude-fake" not in {r["name"] for r in live.admin.list_runtimes()}:
        live.admin.create_runtime(
            name="claude-fake",
            cli="claude",
            cli_version=pinned_version("claude"),
            default_model=MODELS["claude"],
            provider_base_url=live_provider.base_url,
            credential_ref="FAKE_PROVIDER_KEY",
        )
    name = "learner"  # the only test that starts sessions: its worker cannot be deleted after
    live.admin.create_worker(
        name=name,
        runtime="claude-fake",
        repo_url=str(repo),
        auto_learning=True,
        learning_mode="review",
    )
    return name


def recorded_row(plane: ControlPlane, session_id: str, worker: str, sdk: Client) -> None:
    """A `recorded` learning, written as `functions.learning` writes one (a run that commits
    needs a model that edits the worker repository, which the fake provider's script does not)."""
    worker_id = sdk.admin.get_worker(worker)["id"]
    engine = make_engine(f"sqlite:///{plane.data_dir / 'vwm.sqlite3'}")
    try:
        with transaction(session_factory(engine)) as db:
            db.add(
                LearningRow(
                    session_id=session_id,
                    worker_id=worker_id,
                    status="recorded",
                    mode="review",
                    summary="Recorded the build commands.\nAnd where the tests live.",
                    files_changed=["knowledge/build.md", "knowledge/tests.md"],
                    commit_sha=COMMIT,
                    branch=f"learning/{session_id}",
                    created_at=datetime.now(UTC) - timedelta(days=1),
                )
            )
    finally:
        engine.dispose()


def test_sessions_learn_when_they_end_unless_told_not_to(
    live: Client, live_vwm: Vwm, live_plane: ControlPlane, learner: str
) -> None:
    worker = live.worker(learner)
    learned = worker.session()
    assert learned.end().status == "ended"  # learns first
    skipped = worker.session()
    skipped.end(learn=False)
    by_cli = worker.session()
    ended = live_vwm("session", "end", by_cli.id, "--no-learn")
    assert ended.exit_code == 0, ended.output
    assert json.loads(ended.stdout)["status"] == "ended"

    (record,) = live.telemetry.learnings(worker=learner)
    assert (record.session_id, record.worker, record.mode) == (learned.id, learner, "review")
    assert record.status in ("recorded", "nothing", "failed")
    assert record.job_id and record.created_at
    assert record.tokens.output > 0  # the learning job ran on the model
    assert live.telemetry.learnings(session_id=learned.id) == [record]
    assert live.telemetry.learnings(session_id=skipped.id) == []
    assert live.telemetry.learnings(worker=learner, status=record.status) == [record]
    other = next(s for s in ("recorded", "nothing", "failed") if s != record.status)
    assert live.telemetry.learnings(worker=learner, status=other) == []
    assert live.telemetry.learnings(since=datetime.now(UTC) + timedelta(hours=1)) == []
    with pytest.raises(ValidationError) as refused:
        live.telemetry.learnings(status="maybe")
    assert refused.value.status == 422

    table = live_vwm("learnings", "--worker", learner)
    assert table.exit_code == 0, table.output
    header, _, row = table.stdout.splitlines()
    assert header.split() == [
        "when", "worker", "session", "status", "mode", "files", "commit", "branch", "summary"
    ]  # fmt: skip
    assert [learner, learned.id, record.status, "review", "0"] == row.split()[2:7]
    listed = json.loads(live_vwm("learnings", "--session", learned.id, "--json").stdout)
    assert [entry["id"] for entry in listed] == [record.id]

    recorded_row(live_plane, skipped.id, learner, live)
    newest_first = live_vwm("learnings", "--worker", learner, "--limit", "5")
    assert [line.split()[3] for line in newest_first.stdout.splitlines()[2:]] == [
        learned.id,
        skipped.id,
    ]
    only = live_vwm("learnings", "--worker", learner, "--status", "recorded")
    cells = only.stdout.splitlines()[2].split()
    assert cells[4:] == [
        "recorded", "review", "2", COMMIT[:10], f"learning/{skipped.id}",
        "Recorded", "the", "build", "commands.",
    ]  # fmt: skip
    assert "And where" not in only.stdout  # the summary's first line only

    none = live_vwm("learnings", "--worker", "nobody")
    assert (none.exit_code, none.stderr.strip()) == (0, "(no learnings)")
    assert live_vwm("learnings", "--status", "maybe").exit_code == 2
    bad_time = live_vwm("learnings", "--since", "yesterday")
    assert bad_time.exit_code == 1
    assert bad_time.stderr.startswith("error [")
    assert "since" in bad_time.stderr
