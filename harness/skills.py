"""The skills installed for the session's CLI: one folder each where its CLI discovers them.

The control plane pushes each skill a worker uses (`PUT /v1/skills/{name}`, `harness.routes_skills`);
this module checks the archive (`eventing.skill_archive`: its checksum, its files, its manifest),
writes it to ``<skills_dir>/<name>/`` (the folder the adapter names, under the CLI's home, never in
session_repo, which is pushed), and keeps a record of what is installed in the workspace's harness
state (``.vwm/state.json``, key ``skills``) so a restarted harness knows it.

Order of writes, so a crash never leaves a record of a skill that is not there: install writes the
tree, then the record; removal takes the tree away, then the record. What is listed is what is both
recorded and present. Nothing is written for a request that is refused.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eventing.harness_api import InstalledSkill
from eventing.skill_errors import SkillArchiveError
from eventing.skill_rules import MANIFEST_NAME, NAME_PATTERN, NAME_RULE, ArchiveLimits
from harness.errors import Conflict, HarnessError
from harness.workspace import Workspace

if TYPE_CHECKING:
    from eventing.skill_archive import SkillArchive

SKILL_NAME = re.compile(NAME_PATTERN)  # the manifest's rule: a URL name can match a manifest's
STATE_KEY = "skills"


class SkillNameInvalid(HarnessError):
    status = 422
    code = "skill_name_invalid"


class SkillNameMismatch(HarnessError):
    status = 422
    code = "skill_name_mismatch"


class SkillsUnsupported(Conflict):
    code = "skills_unsupported"


class SkillsDirUnsafe(Conflict):
    """The skills folder leads elsewhere through a symbolic link: the CLI can write its home, so
    a link there could send an install out of the workspace or into session_repo."""

    code = "skills_dir_unsafe"


class SkillArchiveRefused(HarnessError):
    """An archive `eventing.skill_archive` refused, with its code (``skill_archive_invalid`` or
    ``skill_checksum_mismatch``), status and details (``reason``, ``path``) unchanged."""

    status = 422
    code = "skill_archive_invalid"

    def __init__(self, refused: SkillArchiveError) -> None:
        super().__init__(refused.message, **refused.details)
        self.code = refused.code
        self.status = refused.status


def check_name(name: str) -> str:
    """`name` if it can name a skill (lowercase letters, digits and inner hyphens, 1 to 64)."""
    if not SKILL_NAME.fullmatch(name):
        raise SkillNameInvalid(f"a skill name is {NAME_RULE}", name=name[:100])
    return name


class Skills:
    """Install, remove and list the skills of one workspace. One operation at a time: the lock
    keeps two requests for the same skill from interleaving their tree and record writes."""

    def __init__(
        self, workspace: Workspace, skills_dir: Path | None, limits: ArchiveLimits | None = None
    ) -> None:
        self._workspace = workspace
        self._dir = skills_dir
        self.limits = limits or ArchiveLimits()
        self._lock = asyncio.Lock()

    async def install(self, name: str, data: bytes, sha256: str) -> tuple[InstalledSkill, bool]:
        """Install the archive `data` as skill `name`; True if anything changed. The same name
        and checksum again changes nothing; another version replaces the tree in one step."""
        # The archive reader (YAML, tar, zip) is imported by the first install, not with the
        # harness: most sessions install none (eventing.skill_rules).
        from eventing.skill_archive import read_skill_archive, write_skill_tree

        check_name(name)
        skills_dir = self._skills_dir()
        async with self._lock:
            # Unpacking and checking up to the archive limit is CPU and disk work: off the loop.
            try:
                archive = await asyncio.to_thread(
                    read_skill_archive, data, expected_sha256=sha256, limits=self.limits
                )
            except SkillArchiveError as refused:
                raise SkillArchiveRefused(refused) from None
            skill = _installed(archive)
            if skill.name != name:
                raise SkillNameMismatch(
                    f"the archive's SKILL.md names the skill {skill.name!r}, not {name!r}; "
                    "upload it under its own name",
                    name=name,
                    manifest_name=skill.name,
                )
            tree = skills_dir / name
            if self._records().get(name) == skill and (tree / MANIFEST_NAME).is_file():
                return skill, False
            await asyncio.to_thread(write_skill_tree, archive, tree)
            # The record changes on the loop, like every other write of the harness state.
            self._save_record(name, skill)
            return skill, True

    async def remove(self, name: str) -> None:
        """Remove skill `name`; removing one that is not installed is not an error."""
        check_name(name)
        skills_dir = self._skills_dir()
        async with self._lock:
            await asyncio.to_thread(_remove_tree, skills_dir / name)
            self._save_record(name, None)

    def installed(self) -> list[InstalledSkill]:
        """The installed skills, by name: recorded, and their folder still there."""
        if self._dir is None:
            return []
        return [
            skill
            for name, skill in sorted(self._records().items())
            if (self._dir / name / MANIFEST_NAME).is_file()
        ]

    def _skills_dir(self) -> Path:
        if self._dir is None:
            raise SkillsUnsupported(
                "this session's CLI reads no skills at its pinned version (docs/adapters.md, "
                "Skills); use a runtime with a CLI that does"
            )
        root = self._workspace.root
        inside = self._dir.relative_to(root)
        if self._dir.resolve() != root.resolve() / inside:
            raise SkillsDirUnsafe(
                f"the CLI's skills folder {inside} passes through a symbolic link; remove the "
                "link from the CLI's home, then install again",
                path=str(inside),
            )
        return self._dir

    def _records(self) -> dict[str, InstalledSkill]:
        raw = self._workspace.load_state().get(STATE_KEY)
        if not isinstance(raw, dict):
            return {}
        records: dict[str, InstalledSkill] = {}
        for name, fields in raw.items():
            try:
                records[name] = InstalledSkill.model_validate({**fields, "name": name})
            except (TypeError, ValueError):
                continue  # a record this harness did not write: the skill counts as absent
        return records

    def _save_record(self, name: str, skill: InstalledSkill | None) -> None:
        state = self._workspace.load_state()
        raw = state.get(STATE_KEY)
        records: dict[str, Any] = dict(raw) if isinstance(raw, dict) else {}
        if skill is None:
            if name not in records:
                return
            del records[name]
        else:
            records[name] = skill.model_dump(exclude={"name"})
        state[STATE_KEY] = records
        self._workspace.save_state(state)


def _installed(archive: SkillArchive) -> InstalledSkill:
    manifest = archive.manifest
    return InstalledSkill(name=manifest.name, version=manifest.version, sha256=archive.sha256)


def _remove_tree(tree: Path) -> None:
    """Take `tree` out of the CLI's sight in one rename, then delete it: a CLI starting meanwhile
    sees the skill whole or not at all. The hidden name is one no skill can have."""
    if not tree.exists() and not tree.is_symlink():
        return
    doomed = tree.with_name(f".{tree.name}.removed-{secrets.token_hex(4)}")
    tree.rename(doomed)
    if doomed.is_dir() and not doomed.is_symlink():
        shutil.rmtree(doomed)
    else:
        doomed.unlink()
