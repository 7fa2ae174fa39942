"""Repositories: the queries of each aggregate (runtimes, skills, workers, sessions, jobs,
settings), used by the control plane's services inside a transaction they own.
Repositories flush (to surface conflicts as our errors) but never commit.

Status changes are not here: they go through `transitions`. API keys are in `api_keys`,
telemetry in `telemetry`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from eventing.semver import highest, precedence_key
from functions.db.columns import utcnow
from functions.db.errors import (
    ConflictError,
    DbError,
    InUse,
    NameTaken,
    NotFoundError,
    VersionMismatch,
)
from functions.db.models import (
    ACTIVE_JOB_STATUSES,
    Base,
    Job,
    Runtime,
    SessionStatus,
    Skill,
    SystemSetting,
    SystemSettingVersion,
    Worker,
    WorkerSession,
    WorkerSkill,
)
from functions.db.pagination import MAX_PAGE_SIZE, Page, decode_cursor, encode_cursor

M = TypeVar("M", bound=Base)
_IMMUTABLE = frozenset({"id", "created_at"})


def _insert(db: Session, row: M, conflict: Callable[[], DbError | None]) -> M:
    """Add and flush `row` in a savepoint; a unique violation becomes `conflict()`'s error."""
    try:
        with db.begin_nested():
            db.add(row)
    except IntegrityError:
        error = conflict()
        if error is None:
            raise
        raise error from None
    return row


def _apply(
    db: Session, row: M, changes: dict[str, Any], conflict: Callable[[], DbError | None]
) -> M:
    """Set `changes` on `row` and flush them in a savepoint; a violation `conflict()` explains
    raises its error. Unknown or immutable attributes are a programming error."""
    columns = type(row).__table__.columns.keys()
    unknown = set(changes) - set(columns) | (set(changes) & _IMMUTABLE)
    if unknown:
        raise TypeError(f"cannot set {sorted(unknown)} on {type(row).__name__}")
    try:
        with db.begin_nested():
            for name, value in changes.items():
                setattr(row, name, value)
    except IntegrityError:
        error = conflict()
        if error is None:
            raise
        raise error from None
    return row


def _require(row: M | None, kind: str, key: str) -> M:
    if row is None:
        raise NotFoundError(kind, key)
    return row


class Runtimes:
    def __init__(self, db: Session) -> None:
        self.db = db

    def add(self, **fields: Any) -> Runtime:
        name = fields["name"]
        return _insert(self.db, Runtime(**fields), lambda: self._taken(name))

    def get(self, name: str) -> Runtime:
        return _require(
            self.db.scalar(select(Runtime).where(Runtime.name == name)), "runtime", name
        )

    def get_by_id(self, runtime_id: str) -> Runtime:
        return _require(self.db.get(Runtime, runtime_id), "runtime", runtime_id)

    def list_all(self) -> list[Runtime]:
        return list(self.db.scalars(select(Runtime).order_by(Runtime.name)))

    def update(self, runtime: Runtime, **changes: Any) -> Runtime:
        name, runtime_id = changes.get("name", runtime.name), runtime.id
        return _apply(self.db, runtime, changes, lambda: self._taken(name, runtime_id))

    def delete(self, name: str) -> None:
        runtime = self.get(name)
        user = self.db.scalar(select(Worker.name).where(Worker.runtime_id == runtime.id).limit(1))
        if user is not None:
            raise InUse("runtime", name, f"worker {user!r}")
        self.db.delete(runtime)
        self.db.flush()

    def _taken(self, name: str, other_than: str | None = None) -> DbError | None:
        owner = self.db.scalar(select(Runtime.id).where(Runtime.name == name))
        return NameTaken("runtime", name) if owner not in (None, other_than) else None


class Skills:
    """Uploaded skill versions. A version, once uploaded, never changes (`add` of the same
    name and version is `skill_exists`); "latest" is the highest version by semver precedence."""

    def __init__(self, db: Session) -> None:
        self.db = db

    def add(self, **fields: Any) -> Skill:
        skill = Skill(**fields)
        label = f"{skill.name}@{skill.version}"
        return _insert(
            self.db,
            skill,
            lambda: ConflictError(
                f"skill {label} is already uploaded with other content; a version never "
                "changes: upload this package as a new version",
                code="skill_exists",
            ),
        )

    def find(self, name: str, version: str) -> Skill | None:
        return self.db.scalar(select(Skill).where(Skill.name == name, Skill.version == version))

    def get(self, name: str, version: str) -> Skill:
        return _require(self.find(name, version), "skill", f"{name}@{version}")

    def latest(self, name: str) -> Skill | None:
        """The highest version of `name`, or None when none is uploaded."""
        versions = self.list_all(name)
        top = highest([skill.version for skill in versions])
        return next((skill for skill in versions if skill.version == top), None)

    def list_all(self, name: str | None = None) -> list[Skill]:
        """By name, then version from highest to lowest."""
        query = select(Skill)
        if name is not None:
            query = query.where(Skill.name == name)
        rows = list(self.db.scalars(query))
        rows.sort(key=lambda skill: precedence_key(skill.version), reverse=True)
        rows.sort(key=lambda skill: skill.name)  # stable: versions stay highest first
        return rows

    def delete(self, name: str, version: str) -> Skill:
        """Delete one version (the caller removes its blob). Refused while a worker pins it,
        or when it is the last version of a skill a worker follows."""
        skill = self.get(name, version)
        others = [s for s in self.list_all(name) if s.version != version]
        pinned = WorkerSkill.version == version
        if not others:
            pinned = or_(pinned, WorkerSkill.version.is_(None))
        user = self.db.scalar(
            select(Worker.name)
            .join(WorkerSkill, WorkerSkill.worker_id == Worker.id)
            .where(WorkerSkill.skill_name == name, pinned)
            .order_by(Worker.name)
            .limit(1)
        )
        if user is not None:
            raise InUse(
                "skill",
                f"{name}@{version}",
                f"worker {user!r} (remove it there first: DELETE "
                f"/v1/admin/workers/{user}/skills/{name})",
            )
        self.db.delete(skill)
        self.db.flush()
        return skill


# What a running session of a worker is given, beside its skills: a change reaches the session
# before its next prompt (`Worker.revision`). The repository and runtime are fixed at start.
SESSION_FIELDS = ("instructions", "model", "auto_learning", "learning_mode")


class Workers:
    def __init__(self, db: Session) -> None:
        self.db = db

    def add(self, **fields: Any) -> Worker:
        name = fields["name"]
        return _insert(self.db, Worker(**fields), lambda: self._taken(name))

    def get(self, name: str) -> Worker:
        return _require(self.db.scalar(select(Worker).where(Worker.name == name)), "worker", name)

    def get_by_id(self, worker_id: str) -> Worker:
        return _require(self.db.get(Worker, worker_id), "worker", worker_id)

    def list_all(self) -> list[Worker]:
        return list(self.db.scalars(select(Worker).order_by(Worker.name)))

    def update(self, worker: Worker, **changes: Any) -> Worker:
        """Apply `changes`; a change of what a session is given bumps the revision."""
        name, worker_id = changes.get("name", worker.name), worker.id
        if any(
            field in changes and changes[field] != getattr(worker, field)
            for field in SESSION_FIELDS
        ):
            changes["revision"] = (worker.revision or 1) + 1
        return _apply(self.db, worker, changes, lambda: self._taken(name, worker_id))

    def delete(self, name: str) -> None:
        """Only a worker that never had a session can be deleted: sessions, jobs and telemetry
        keep pointing at it."""
        worker = self.get(name)
        sessions = self.db.scalar(
            select(WorkerSession.id).where(WorkerSession.worker_id == worker.id).limit(1)
        )
        if sessions is not None:
            raise InUse("worker", name, "its sessions")
        self.db.delete(worker)
        self.db.flush()

    def use_skill(self, worker: Worker, name: str, version: str | None) -> WorkerSkill:
        """Make `worker` use skill `name`: `version` pins one, None follows the highest. The
        skill (that version, or any) must be uploaded. Bumps the worker's revision."""
        if version is None:
            if Skills(self.db).latest(name) is None:
                raise NotFoundError("skill", name)
        else:
            Skills(self.db).get(name, version)
        link = self.db.get(WorkerSkill, (worker.id, name))
        if link is None:
            link = WorkerSkill(worker_id=worker.id, skill_name=name, version=version)
            self.db.add(link)
        elif link.version == version:
            return link  # nothing changes: the revision stays
        else:
            link.version = version
        self.bump(worker)
        return link

    def drop_skill(self, worker: Worker, name: str) -> None:
        """Stop using skill `name` (404 when the worker does not use it)."""
        link = _require(
            self.db.get(WorkerSkill, (worker.id, name)), "skill", f"{name} of {worker.name}"
        )
        self.db.delete(link)
        self.bump(worker)

    def skill_links(self, worker: Worker) -> list[WorkerSkill]:
        query = (
            select(WorkerSkill)
            .where(WorkerSkill.worker_id == worker.id)
            .order_by(WorkerSkill.skill_name)
        )
        return list(self.db.scalars(query))

    def skills(self, worker: Worker) -> list[Skill]:
        """The skill versions the worker's sessions get now: each pin's version, or the
        highest uploaded for a skill it follows."""
        resolved: list[Skill] = []
        skills = Skills(self.db)
        for link in self.skill_links(worker):
            found = (
                skills.latest(link.skill_name)
                if link.version is None
                else skills.find(link.skill_name, link.version)
            )
            if found is not None:  # deleting a used version is refused; this is a race's guard
                resolved.append(found)
        return resolved

    def bump(self, worker: Worker) -> None:
        """What running sessions are given changed: they are brought up to date before their
        next prompt."""
        worker.revision = (worker.revision or 1) + 1
        self.db.flush()

    def _taken(self, name: str, other_than: str | None = None) -> DbError | None:
        owner = self.db.scalar(select(Worker.id).where(Worker.name == name))
        return NameTaken("worker", name) if owner not in (None, other_than) else None


class Sessions:
    def __init__(self, db: Session) -> None:
        self.db = db

    def add(self, worker_id: str, workspace: str, **fields: Any) -> WorkerSession:
        """A new session, status `provisioning`."""
        session = WorkerSession(worker_id=worker_id, workspace=workspace, **fields)
        self.db.add(session)
        self.db.flush()
        return session

    def get(self, session_id: str, *, for_update: bool = False) -> WorkerSession:
        """`for_update` locks the row (PostgreSQL) until the transaction ends."""
        query = select(WorkerSession).where(WorkerSession.id == session_id)
        if for_update:
            query = query.with_for_update()
        return _require(self.db.scalar(query), "session", session_id)

    def page(
        self,
        *,
        worker_id: str | None = None,
        status: SessionStatus | str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[WorkerSession]:
        """Newest first, by (created_at, id); pass `next_cursor` back for the next page."""
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise ValueError(f"limit must be between 1 and {MAX_PAGE_SIZE}, not {limit}")
        query = select(WorkerSession).order_by(
            WorkerSession.created_at.desc(), WorkerSession.id.desc()
        )
        if worker_id is not None:
            query = query.where(WorkerSession.worker_id == worker_id)
        if status is not None:
            query = query.where(WorkerSession.status == SessionStatus(status))
        if cursor is not None:
            created_at, row_id = decode_cursor(cursor)
            query = query.where(
                or_(
                    WorkerSession.created_at < created_at,
                    and_(WorkerSession.created_at == created_at, WorkerSession.id < row_id),
                )
            )
        rows = list(self.db.scalars(query.limit(limit + 1)))
        if len(rows) <= limit:
            return Page(rows, None)
        last = rows[limit - 1]
        return Page(rows[:limit], encode_cursor(last.created_at, last.id))

    def idle(self, before: datetime) -> list[WorkerSession]:
        """Ready sessions with no activity since `before`: candidates for idle cleanup."""
        query = select(WorkerSession).where(
            WorkerSession.status == SessionStatus.READY, WorkerSession.last_activity_at < before
        )
        return list(self.db.scalars(query.order_by(WorkerSession.last_activity_at)))

    def live(self) -> list[WorkerSession]:
        """Sessions not yet ended (failed ones included: they still hold resources)."""
        query = select(WorkerSession).where(WorkerSession.status != SessionStatus.ENDED)
        return list(self.db.scalars(query.order_by(WorkerSession.created_at)))

    def touch(self, session_id: str) -> None:
        self.db.execute(
            update(WorkerSession)
            .where(WorkerSession.id == session_id)
            .values(last_activity_at=utcnow())
            .execution_options(synchronize_session=False)
        )


class Jobs:
    def __init__(self, db: Session) -> None:
        self.db = db

    def get(self, job_id: str) -> Job:
        return _require(self.db.get(Job, job_id), "job", job_id)

    def active(self, session_id: str) -> Job | None:
        """The session's queued or running job, if any (there is at most one)."""
        return self.db.scalar(
            select(Job).where(Job.session_id == session_id, Job.status.in_(ACTIVE_JOB_STATUSES))
        )

    def for_session(self, session_id: str, limit: int = 50) -> list[Job]:
        return self.page(session_id, limit=limit).items

    def page(self, session_id: str, *, limit: int = 50, cursor: str | None = None) -> Page[Job]:
        """The session's jobs, newest first, `limit` at a time after `cursor`."""
        query = (
            select(Job)
            .where(Job.session_id == session_id)
            .order_by(Job.created_at.desc(), Job.id.desc())
        )
        if cursor is not None:
            created_at, row_id = decode_cursor(cursor)
            query = query.where(
                or_(
                    Job.created_at < created_at, and_(Job.created_at == created_at, Job.id < row_id)
                )
            )
        rows = list(self.db.scalars(query.limit(limit + 1)))
        if len(rows) <= limit:
            return Page(rows, None)
        last = rows[limit - 1]
        return Page(rows[:limit], encode_cursor(last.created_at, last.id))


class Settings:
    def __init__(self, db: Session) -> None:
        self.db = db

    def get(self, key: str) -> SystemSetting | None:
        return self.db.get(SystemSetting, key)

    def value(self, key: str, default: Any = None) -> Any:
        setting = self.get(key)
        return default if setting is None else setting.value

    def list_all(self) -> list[SystemSetting]:
        return list(self.db.scalars(select(SystemSetting).order_by(SystemSetting.key)))

    def put(self, key: str, value: Any, *, expected_version: int | None = None) -> SystemSetting:
        """Write a setting, version 1 on the first write and one more on each write after, and
        keep the version written in its history (`versions`), in this same transaction.
        With `expected_version` (0: must not exist yet) a concurrent writer makes this raise
        `VersionMismatch` instead of silently overwriting."""
        if value is None:
            raise ValueError(f"setting {key!r}: a value cannot be null; delete the key instead")
        setting = self._write(key, value, expected_version)
        self.db.add(
            SystemSettingVersion(
                key=key, version=setting.version, value=value, written_at=setting.updated_at
            )
        )
        self.db.flush()
        return setting

    def versions(self, key: str, *, limit: int = 50) -> list[SystemSettingVersion]:
        """The values `key` was given, newest first; empty for a key never set (or deleted)."""
        query = (
            select(SystemSettingVersion)
            .where(SystemSettingVersion.key == key)
            .order_by(SystemSettingVersion.version.desc())
            .limit(limit)
        )
        return list(self.db.scalars(query))

    def _write(self, key: str, value: Any, expected_version: int | None) -> SystemSetting:
        query = update(SystemSetting).where(SystemSetting.key == key)
        if expected_version is not None:
            query = query.where(SystemSetting.version == expected_version)
        bump = query.values(value=value, version=SystemSetting.version + 1, updated_at=utcnow())
        bump = bump.execution_options(synchronize_session=False)
        if self.db.execute(bump).rowcount == 1:  # type: ignore[attr-defined]
            return self._fresh(key)
        current = self._version(key)
        if expected_version is not None:
            if current is not None or expected_version != 0:
                raise VersionMismatch(key, expected_version, current)
        elif current is not None:  # created since our UPDATE looked: bump that one
            return self._write(key, value, None)
        try:
            with self.db.begin_nested():
                self.db.add(SystemSetting(key=key, value=value, version=1))
        except IntegrityError:  # another writer created it first
            if expected_version == 0:
                raise VersionMismatch(key, 0, self._version(key)) from None
            return self._write(key, value, None)
        return self._fresh(key)

    def delete(self, key: str) -> None:
        """Delete a setting and its history: set again, it starts over at version 1. (The
        database would cascade; deleting here also drops the rows this session holds.)"""
        self.db.execute(delete(SystemSettingVersion).where(SystemSettingVersion.key == key))
        self.db.execute(delete(SystemSetting).where(SystemSetting.key == key))

    def _version(self, key: str) -> int | None:
        return self.db.scalar(select(SystemSetting.version).where(SystemSetting.key == key))

    def _fresh(self, key: str) -> SystemSetting:
        setting = self.db.get(SystemSetting, key, populate_existing=True)
        assert setting is not None
        return setting
