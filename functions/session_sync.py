"""Bringing a session's harness up to date with what its worker gives it now, before a prompt.

What a harness is given: the global instructions (a system setting, versioned), the worker's
instructions and model (its `revision` counts their changes) and the worker's skills (their
digest: each skill's name, version and checksum). The session row remembers which of each its
harness has, so any replica can tell whether it must bring it up to date: a bootstrap again for
instructions and model (the harness rewrites the instruction file and keeps the model for its
next jobs), and the changed skills pushed from blob storage, removed ones deleted.

Used at session start (`sessions`), before a prompt's dispatch (`job_dispatch`) and before a
prompt request's delivery (`prompt_delivery`).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

from sqlalchemy.orm import Session

from functions.context import blobs, db
from functions.db.models import Skill, WorkerSession
from functions.db.repositories import Workers
from functions.harness_client import HarnessClient
from functions.session_runtime import SessionView, bootstrap_body, global_instructions
from functions.skill_blobs import fetch_skill

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SkillRef:
    """One skill version a worker's sessions get, detached from its row."""

    name: str
    version: str
    sha256: str
    blob_key: str

    @classmethod
    def of(cls, row: Skill) -> SkillRef:
        return cls(row.name, row.version, row.sha256, row.blob_key)


@dataclass(frozen=True)
class Wanted:
    """What the session's harness should have now."""

    instructions: str
    instructions_version: int
    worker_revision: int
    skills: tuple[SkillRef, ...]

    @property
    def skills_digest(self) -> str:
        listed = "\n".join(f"{s.name}@{s.version}:{s.sha256}" for s in self.skills)
        return hashlib.sha256(listed.encode()).hexdigest()


def wanted(session: Session, view: SessionView) -> Wanted:
    """Read in one transaction: the global instructions and the worker's skills as they are
    (the worker's revision is the one `view` read a moment before)."""
    instructions, version = global_instructions(session)
    skills = tuple(SkillRef.of(row) for row in Workers(session).skills(view.worker))
    return Wanted(instructions, version, view.worker.revision or 1, skills)


def is_current(view: SessionView, want: Wanted) -> bool:
    row = view.session
    return (
        row.instructions_version == want.instructions_version
        and row.worker_revision == want.worker_revision
        and row.skills_digest == want.skills_digest
    )


async def bring_up_to_date(view: SessionView, harness: HarnessClient, want: Wanted) -> None:
    """Give the harness what it lacks of `want`, then note on the session row that it has it.

    A harness running a job refuses a bootstrap (409 `job_running`): the caller decides whether
    that fails its call or only delays the update to the next prompt."""
    row = view.session
    if (
        row.instructions_version != want.instructions_version
        or row.worker_revision != want.worker_revision
    ):
        await harness.bootstrap(bootstrap_body(view, want.instructions))
    if row.skills_digest != want.skills_digest:
        await sync_skills(harness, want.skills)
    await db(_save_synced, row.id, want)


async def sync_skills(harness: HarnessClient, skills: tuple[SkillRef, ...]) -> None:
    """Install on the harness each skill it lacks or has at another checksum, and remove those
    the worker no longer uses. Each package is read from blob storage with its checksum checked,
    and checked again by the harness before it writes anything."""
    installed = {item.name: item.sha256 for item in (await harness.skills()).items}
    store = blobs()
    for skill in skills:
        if installed.get(skill.name) == skill.sha256:
            continue
        data = await fetch_skill(store, skill)
        await harness.install_skill(skill.name, data, skill.sha256)
        logger.info("skill installed", extra={"skill": skill.name, "version": skill.version})
    for name in sorted(set(installed) - {s.name for s in skills}):
        await harness.remove_skill(name)
        logger.info("skill removed", extra={"skill": name})


def _save_synced(session: Session, session_id: str, want: Wanted) -> None:
    row = session.get(WorkerSession, session_id)
    if row is not None:
        row.instructions_version = want.instructions_version
        row.worker_revision = want.worker_revision
        row.skills_digest = want.skills_digest
