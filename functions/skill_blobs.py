"""Reading a skill's package back from blob storage, its checksum checked on every read: a blob
that changed in storage (a bad disk, a hand edit, an overwrite) is never installed or served."""

from __future__ import annotations

import hashlib
from typing import Protocol

from functions.blobs import BlobNotFound, BlobStore
from functions.errors import FunctionsError


class StoredSkill(Protocol):
    """What names a skill's package in storage: a `Skill` row, or a detached copy of one."""

    @property
    def name(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def sha256(self) -> str: ...
    @property
    def blob_key(self) -> str: ...


class SkillBlobMismatch(FunctionsError):
    """The stored package is not the one uploaded."""

    code = "skill_checksum_mismatch"
    status = 502


class SkillBlobMissing(FunctionsError):
    """The row is there, its package is not (the bucket was emptied or the key removed)."""

    code = "skill_blob_missing"
    status = 502


async def fetch_skill(store: BlobStore, skill: StoredSkill) -> bytes:
    label = f"{skill.name}@{skill.version}"
    try:
        data = await store.get(skill.blob_key)
    except BlobNotFound:
        raise SkillBlobMissing(
            f"the package of skill {label} is missing from blob storage (key {skill.blob_key}); "
            "restore it, or delete this version and upload it again",
            skill=label,
        ) from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != skill.sha256:
        raise SkillBlobMismatch(
            f"the stored package of skill {label} does not match the checksum taken at upload "
            f"(expected {skill.sha256}, found {actual}); the blob changed in storage: delete "
            "this version and upload it again",
            skill=label,
            expected=skill.sha256,
            actual=actual,
        )
    return data
