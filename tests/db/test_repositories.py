"""Repositories: names are unique with a clear error, things in use cannot be deleted, sessions
page by a stable cursor, settings count their versions, and API keys verify without storing the
secret."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from functions.db.api_keys import ApiKeys, hash_secret
from functions.db.engine import transaction
from functions.db.errors import (
    ConflictError,
    InUse,
    InvalidCursor,
    NameTaken,
    NotFoundError,
    VersionMismatch,
)
from functions.db.models import ApiKey, WorkerSession
from functions.db.repositories import Runtimes, Sessions, Settings, Skills, Workers
from functions.db.transitions import transition_session
from tests.db import factories

Factory = sessionmaker[Session]


def test_runtime_names_are_unique_and_the_transaction_survives(factory: Factory) -> None:
    with transaction(factory) as db:
        factories.runtime(db, "claude-fast")
        with pytest.raises(NameTaken, match="claude-fast") as taken:
            factories.runtime(db, "claude-fast")
        assert taken.value.code == "name_taken"
        factories.runtime(db, "codex", cli="codex")  # the savepoint kept the transaction usable
    with transaction(factory) as db:
        assert [r.name for r in Runtimes(db).list_all()] == ["claude-fast", "codex"]


def test_renaming_onto_a_taken_name(factory: Factory) -> None:
    with transaction(factory) as db:
        factories.worker(db, "alpha")
        beta = factories.worker(db, "beta")
        with pytest.raises(NameTaken, match="alpha"):
            Workers(db).update(beta, name="alpha")
        Workers(db).update(beta, instructions="be brief")
        runtime = Runtimes(db).get("rt-beta")
        with pytest.raises(IntegrityError):  # not a name clash: reported as it is
            Runtimes(db).update(runtime, cli="cursor")
    with transaction(factory) as db:
        assert Workers(db).get("beta").instructions == "be brief"
        with pytest.raises(TypeError, match="created_at"):
            Workers(db).update(Workers(db).get("beta"), created_at=datetime.now(UTC))


def test_updated_at_moves_on_update(factory: Factory) -> None:
    with transaction(factory) as db:
        runtime = factories.runtime(db)
        created = runtime.updated_at
    with transaction(factory) as db:
        Runtimes(db).update(Runtimes(db).get(runtime.name), cli_version="2.1.0")
    with transaction(factory) as db:
        assert Runtimes(db).get(runtime.name).updated_at > created


def test_what_is_in_use_cannot_be_deleted(factory: Factory) -> None:
    with transaction(factory) as db:
        worker = factories.worker(db, "alpha")
        Skills(db).add(name="lint", version="1.0.0", blob_key="k", sha256="0" * 64, size=3)
        Workers(db).use_skill(worker, "lint", "1.0.0")
        assert [s.name for s in Workers(db).skills(worker)] == ["lint"]
        with pytest.raises(InUse, match="worker 'alpha'"):
            Runtimes(db).delete("rt-alpha")
        with pytest.raises(InUse):
            Skills(db).delete("lint", "1.0.0")
        factories.session(db, worker)
        with pytest.raises(InUse, match="sessions"):
            Workers(db).delete("alpha")


def _skill(db: Session, name: str, version: str) -> None:
    Skills(db).add(
        name=name, version=version, blob_key=f"{name}/{version}", sha256="0" * 64, size=1
    )


def test_a_followed_skill_resolves_to_its_highest_version_and_pins_hold(factory: Factory) -> None:
    with transaction(factory) as db:
        worker = factories.worker(db, "alpha")
        for version in ("1.2.0", "1.10.0", "1.9.9"):
            _skill(db, "lint", version)
        _skill(db, "fmt", "0.1.0")
        start = worker.revision
        Workers(db).use_skill(worker, "lint", None)
        Workers(db).use_skill(worker, "fmt", "0.1.0")
        assert [(s.name, s.version) for s in Workers(db).skills(worker)] == [
            ("fmt", "0.1.0"),
            ("lint", "1.10.0"),
        ]
        assert worker.revision == start + 2
        Workers(db).use_skill(worker, "fmt", "0.1.0")  # the same pin again changes nothing
        assert worker.revision == start + 2
        Workers(db).use_skill(worker, "lint", "1.2.0")
        assert ("lint", "1.2.0") in [(s.name, s.version) for s in Workers(db).skills(worker)]
        with pytest.raises(NotFoundError):
            Workers(db).use_skill(worker, "lint", "3.0.0")
        with pytest.raises(NotFoundError):
            Workers(db).use_skill(worker, "nothing", None)
        Workers(db).drop_skill(worker, "fmt")
        with pytest.raises(NotFoundError):
            Workers(db).drop_skill(worker, "fmt")
        assert [s.name for s in Workers(db).skills(worker)] == ["lint"]


def test_a_followed_skill_keeps_its_last_version(factory: Factory) -> None:
    with transaction(factory) as db:
        worker = factories.worker(db, "alpha")
        _skill(db, "lint", "1.0.0")
        _skill(db, "lint", "2.0.0")
        Workers(db).use_skill(worker, "lint", None)
        Skills(db).delete("lint", "2.0.0")  # the worker now follows 1.0.0
        assert [s.version for s in Workers(db).skills(worker)] == ["1.0.0"]
        with pytest.raises(InUse, match="DELETE /v1/admin/workers/alpha/skills/lint"):
            Skills(db).delete("lint", "1.0.0")


def test_changing_what_a_session_is_given_bumps_the_revision(factory: Factory) -> None:
    with transaction(factory) as db:
        worker = factories.worker(db, "alpha")
        start = worker.revision
        Workers(db).update(worker, repo_branch="dev")  # fixed at a session's start
        assert worker.revision == start
        Workers(db).update(worker, instructions=worker.instructions)  # no change
        assert worker.revision == start
        Workers(db).update(worker, instructions="be brief")
        Workers(db).update(worker, model="m2")
        Workers(db).update(worker, learning_mode="review")
        assert worker.revision == start + 3


def test_deleting_a_worker_without_sessions_drops_its_skill_links(factory: Factory) -> None:
    with transaction(factory) as db:
        worker = factories.worker(db, "alpha")
        Skills(db).add(name="lint", version="1.0.0", blob_key="k", sha256="0" * 64, size=3)
        Workers(db).use_skill(worker, "lint", None)
    with transaction(factory) as db:
        Workers(db).delete("alpha")
        Skills(db).delete("lint", "1.0.0")
        Runtimes(db).delete("rt-alpha")
        with pytest.raises(NotFoundError):
            Workers(db).get("alpha")


def test_a_skill_version_is_uploaded_once(factory: Factory) -> None:
    with transaction(factory) as db:
        fields = {"name": "lint", "blob_key": "k", "sha256": "0" * 64, "size": 3}
        Skills(db).add(version="1.0.0", **fields)
        with pytest.raises(ConflictError) as exists:
            Skills(db).add(version="1.0.0", **fields)
        assert exists.value.code == "skill_exists"
        Skills(db).add(version="2.0.0", **fields)
        assert [s.version for s in Skills(db).list_all("lint")] == ["2.0.0", "1.0.0"]


def _sessions_at(factory: Factory, count: int) -> tuple[list[str], str, str]:
    """`count` sessions on two workers, created a second apart, three sharing one instant;
    returns the ids newest first and the two worker ids."""
    start = datetime(2025, 1, 1, tzinfo=UTC)
    with transaction(factory) as db:
        workers = [factories.worker(db, "odd"), factories.worker(db, "even")]
        rows = []
        for index in range(count):
            created = start + timedelta(seconds=min(index, count - 3))  # last three tie
            session = Sessions(db).add(workers[index % 2].id, "/ws", created_at=created)
            rows.append(session)
        if count > 1:
            transition_session(db, rows[1], "ready")
    rows.sort(key=lambda s: (s.created_at, s.id), reverse=True)
    return [s.id for s in rows], workers[0].id, workers[1].id


def test_pagination_walks_every_session_once_newest_first(factory: Factory) -> None:
    expected, _, _ = _sessions_at(factory, 8)
    seen, cursor, pages = [], None, 0
    while True:
        with transaction(factory) as db:
            page = Sessions(db).page(limit=3, cursor=cursor)
        seen += [s.id for s in page.items]
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == expected and pages == 3


def test_pagination_filters(factory: Factory) -> None:
    _, odd, even = _sessions_at(factory, 7)
    with transaction(factory) as db:
        repo = Sessions(db)
        assert len(repo.page(worker_id=odd, limit=50).items) == 4
        first = repo.page(worker_id=even, limit=2)
        rest = repo.page(worker_id=even, limit=2, cursor=first.next_cursor)
        assert [s.worker_id for s in first.items + rest.items] == [even] * 3
        assert rest.next_cursor is None
        ready = repo.page(status="ready")
        assert [s.status for s in ready.items] == ["ready"]
        assert repo.page(status="ended").items == []
        assert repo.page(limit=7).next_cursor is None
        with pytest.raises(InvalidCursor):
            repo.page(cursor="not-a-cursor")
        with pytest.raises(ValueError, match="limit"):
            repo.page(limit=0)


def test_idle_and_live_sessions(factory: Factory) -> None:
    with transaction(factory) as db:
        idle = factories.session(db)
        idle.last_activity_at = datetime.now(UTC) - timedelta(hours=2)
        busy = factories.session(db)
        transition_session(db, factories.session(db), "ending")
        ended = transition_session(db, factories.session(db), "ending")
        transition_session(db, ended, "ended")
    with transaction(factory) as db:
        repo = Sessions(db)
        assert [s.id for s in repo.idle(datetime.now(UTC) - timedelta(hours=1))] == [idle.id]
        assert len(repo.live()) == 3
        repo.touch(idle.id)
        assert repo.idle(datetime.now(UTC) - timedelta(hours=1)) == []
    assert busy.status == "ready"


def test_settings_count_their_versions(factory: Factory) -> None:
    with transaction(factory) as db:
        settings = Settings(db)
        assert settings.get("global_instructions") is None
        assert settings.value("global_instructions", "") == ""
        first = settings.put("global_instructions", "Be brief.")
        assert first.version == 1
    with transaction(factory) as db:
        assert Settings(db).put("global_instructions", "Be brief. Use en-GB.").version == 2
        third = Settings(db).put("global_instructions", {"text": "structured is fine"})
        assert third.version == 3
        assert third.updated_at >= first.updated_at
        assert Settings(db).value("global_instructions") == {"text": "structured is fine"}
        assert [s.key for s in Settings(db).list_all()] == ["global_instructions"]


def test_settings_optimistic_versions(factory: Factory) -> None:
    with transaction(factory) as db:
        settings = Settings(db)
        assert settings.put("limits", [1], expected_version=0).version == 1
        with pytest.raises(VersionMismatch) as stale:
            settings.put("limits", [2], expected_version=0)
        assert stale.value.details == {"key": "limits", "expected": 0, "actual": 1}
        assert settings.put("limits", [2], expected_version=1).version == 2
        with pytest.raises(VersionMismatch):
            settings.put("limits", [3], expected_version=1)
        with pytest.raises(VersionMismatch):
            settings.put("missing", [3], expected_version=4)
        with pytest.raises(ValueError, match="null"):
            settings.put("limits", None)
        settings.delete("limits")
        assert settings.get("limits") is None


def test_each_settings_write_is_kept_as_a_version_newest_first(factory: Factory) -> None:
    with transaction(factory) as db:
        settings = Settings(db)
        assert settings.versions("global_instructions") == []
        first_written = settings.put("global_instructions", "Be brief.").updated_at
        settings.put("global_instructions", {"text": "structured"}, expected_version=1)
    with transaction(factory) as db:
        third_written = Settings(db).put("global_instructions", "Be kind.").updated_at
        Settings(db).put("other", 1)
    with transaction(factory) as db:
        versions = Settings(db).versions("global_instructions")
        assert [(v.version, v.value) for v in versions] == [
            (3, "Be kind."),
            (2, {"text": "structured"}),
            (1, "Be brief."),
        ]
        assert versions[0].written_at == third_written
        assert versions[2].written_at == first_written
        assert [v.version for v in Settings(db).versions("global_instructions", limit=2)] == [3, 2]
        assert [(v.key, v.value) for v in Settings(db).versions("other")] == [("other", 1)]


def test_a_settings_write_and_its_version_commit_or_roll_back_together(factory: Factory) -> None:
    with transaction(factory) as db:
        Settings(db).put("global_instructions", "Be brief.")
    with pytest.raises(RuntimeError), transaction(factory) as db:
        Settings(db).put("global_instructions", "never committed")
        raise RuntimeError("the request failed after the write")
    with transaction(factory) as db:
        settings = Settings(db)
        with pytest.raises(VersionMismatch):  # a refused write leaves no version behind
            settings.put("global_instructions", "stale", expected_version=5)
        assert [(v.version, v.value) for v in settings.versions("global_instructions")] == [
            (1, "Be brief.")
        ]
        settings.delete("global_instructions")  # its history goes with it...
        assert settings.versions("global_instructions") == []
        settings.put("global_instructions", "Again.")  # ...so it starts over at version 1
        assert [(v.version, v.value) for v in settings.versions("global_instructions")] == [
            (1, "Again.")
        ]


def test_api_keys_verify_by_hash(factory: Factory) -> None:
    with transaction(factory) as db:
        keys = ApiKeys(db)
        assert not keys.has_admin()
        row, key = keys.issue("first admin", "admin")
        assert keys.has_admin()
    assert key.startswith(f"vwm_{row.id}_")
    secret = key.split("_", 2)[2]
    with transaction(factory) as db:
        stored = db.scalar(select(ApiKey))
        assert stored is not None and stored.secret_hash == hash_secret(secret)
        assert secret not in {stored.id, stored.name, stored.secret_hash}
        found = ApiKeys(db).authenticate(key)
        assert found is not None and found.scope == "admin" and found.last_used_at is None
        ApiKeys(db).touch(found.id)  # a use is noted apart, at most once a minute
        first_use = found.last_used_at
        assert first_use is not None
        ApiKeys(db).touch(found.id)
        assert found.last_used_at == first_use
        for wrong in (key + "x", f"vwm_{row.id}_", "bearer", f"xyz_{row.id}_{secret}"):
            assert ApiKeys(db).authenticate(wrong) is None
    with transaction(factory) as db:
        ApiKeys(db).revoke(row.id)
        assert ApiKeys(db).authenticate(key) is None
        assert not ApiKeys(db).has_admin()
        with pytest.raises(NotFoundError):
            ApiKeys(db).revoke("nope")


def test_sessions_repository_reads(factory: Factory) -> None:
    with transaction(factory) as db:
        session = factories.session(db)
    with transaction(factory) as db:
        assert Sessions(db).get(session.id, for_update=True).id == session.id
        assert isinstance(db.get(WorkerSession, session.id), WorkerSession)
        with pytest.raises(NotFoundError, match="session"):
            Sessions(db).get("missing")
