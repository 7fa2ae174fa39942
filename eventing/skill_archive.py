"""Skill packages: read an uploaded archive safely, and write its files into a folder.

A skill is a versioned tool package for an agent CLI: a ``.tar.gz``/``.tgz`` or ``.zip`` holding
a ``SKILL.md`` with YAML front matter (name, version, description) and any other files. The
control plane reads an upload with `read_skill_archive` to validate it and take its manifest; the
harness reads it again and unpacks it into the workspace with `write_skill_tree`. Both sides
refuse the same archives with the same `SkillArchiveError` reasons (`REASONS`), because both run
this code.

The package's files are either at the archive's root or all inside one top folder (what
``tar czf x.tgz myskill/`` makes), which is then stripped. How entries are read and checked is in
`eventing.skill_entries`; the front matter rules are in `eventing.skill_manifest`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eventing.skill_entries import (
    ArchiveFormat,
    ArchiveLimits,
    Entry,
    normalize_path,
    read_entries,
)
from eventing.skill_errors import REASONS, SkillArchiveError, SkillChecksumMismatch, shown
from eventing.skill_manifest import MANIFEST_NAME, SkillManifest, parse_manifest

__all__ = [
    "REASONS",
    "ArchiveLimits",
    "SkillArchive",
    "SkillArchiveError",
    "SkillChecksumMismatch",
    "SkillFile",
    "SkillManifest",
    "read_skill_archive",
    "write_skill_tree",
]

log = logging.getLogger(__name__)

_GZIP_MAGIC = b"\x1f\x8b"
_ZIP_MAGIC = b"PK\x03\x04"
_FILE_MODE = 0o644
_EXECUTABLE_MODE = 0o755
_FOLDER_MODE = 0o755
_LIMITS = ArchiveLimits()
_PATH_LIMITS = ArchiveLimits(max_path_chars=1 << 16, max_depth=1 << 10)  # for write's re-check


@dataclass(frozen=True)
class SkillFile:
    path: str  # relative, "/"-separated, normalized; SKILL.md at the top
    data: bytes
    executable: bool


@dataclass(frozen=True)
class SkillArchive:
    manifest: SkillManifest
    files: tuple[SkillFile, ...]  # sorted by path
    sha256: str  # of the archive bytes as given, lowercase hex
    size: int  # archive bytes
    format: ArchiveFormat


def read_skill_archive(
    data: bytes, *, expected_sha256: str | None = None, limits: ArchiveLimits = _LIMITS
) -> SkillArchive:
    """The package in `data`, checked whole, or SkillArchiveError (SkillChecksumMismatch when
    `expected_sha256`, compared first, differs)."""
    digest = hashlib.sha256(data).hexdigest()
    if expected_sha256 is not None and expected_sha256.strip().lower() != digest:
        raise SkillChecksumMismatch(expected_sha256, digest)
    if len(data) > limits.max_archive_bytes:
        raise SkillArchiveError(
            "too_large",
            f"the archive is {len(data)} bytes, over the limit of {limits.max_archive_bytes}; "
            "leave out files the skill does not need",
            limit=limits.max_archive_bytes,
        )
    form = _format_of(data)
    entries = read_entries(data, form, limits)
    files = _package_files(entries)
    manifest = parse_manifest(next(file.data for file in files if file.path == MANIFEST_NAME))
    return SkillArchive(manifest, files, sha256=digest, size=len(data), format=form)


def _format_of(data: bytes) -> ArchiveFormat:
    """By content: an upload's file name says nothing reliable."""
    if data.startswith(_GZIP_MAGIC):
        return "tar.gz"
    if data.startswith(_ZIP_MAGIC):
        return "zip"
    raise SkillArchiveError(
        "not_an_archive",
        "the upload is neither a .tar.gz nor a .zip archive; pack the skill folder with "
        "'tar czf skill.tar.gz myskill/' or 'zip -r skill.zip myskill/'",
    )


def _package_files(entries: list[Entry]) -> tuple[SkillFile, ...]:
    """The package's files, paths relative to the folder holding SKILL.md: the archive's root,
    or its one top folder."""
    kinds = {entry.path: entry.is_folder for entry in entries}
    prefix = ""
    if kinds.get(MANIFEST_NAME) is not False:
        tops = sorted({entry.path.split("/", 1)[0] for entry in entries})
        if len(tops) != 1 or kinds.get(f"{tops[0]}/{MANIFEST_NAME}") is not False:
            found = ", ".join(f"'{shown(top)}'" for top in tops[:5]) or "nothing"
            raise SkillArchiveError(
                "no_manifest",
                f"no {MANIFEST_NAME} at the archive's root, nor in one folder holding everything "
                f"(found {found}); put {MANIFEST_NAME} at the top of the skill folder and pack "
                "that folder alone",
            )
        prefix = tops[0] + "/"
    return tuple(
        SkillFile(entry.path.removeprefix(prefix), entry.data, entry.executable)
        for entry in sorted(entries, key=lambda entry: entry.path)
        if not entry.is_folder
    )


def write_skill_tree(archive: SkillArchive, dest: Path) -> None:
    """Write the package's files as the folder `dest`, replacing what is there.

    The files are written into a fresh folder next to `dest`, which is then renamed into place
    (an existing `dest` is renamed aside first, then removed): a failure leaves the old tree or
    nothing new. Files are 0644 (0755 when executable), folders 0755, whatever the umask or the
    parent's setgid bit. Missing parents are created. ValueError for a `dest` whose parent is a
    symbolic link, or for a file path that is not a normalized relative one."""
    dest = Path(dest)
    if dest.name in ("", ".", ".."):
        raise ValueError(f"{dest} does not name a folder to write the skill into")
    parent = dest.parent
    if parent.is_symlink():
        raise ValueError(f"{parent} is a symbolic link; write skills into a real folder")
    _check_paths(archive.files)
    parent.mkdir(parents=True, exist_ok=True)
    # A hidden name, cut so that it fits beside any name a folder may have.
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name[:100]}.", suffix=".new", dir=parent))
    try:
        _fill(staging, archive.files)
        old = _swap_into_place(staging, dest)
    except BaseException:
        _remove_tree(staging)
        raise
    if old is not None:
        _remove_tree(old)


def _check_paths(files: tuple[SkillFile, ...]) -> None:
    """A SkillArchive may be built by hand: its paths are checked again before any is used."""
    seen: set[str] = set()
    for file in files:
        try:
            normal = normalize_path(file.path, _PATH_LIMITS)
        except SkillArchiveError as exc:
            raise ValueError(exc.message) from None
        if normal != file.path or not normal or normal in seen:
            raise ValueError(f"'{shown(file.path)}' is not a normalized, unique relative path")
        seen.add(normal)


def _fill(root: Path, files: tuple[SkillFile, ...]) -> None:
    os.chmod(root, _FOLDER_MODE)  # mkdtemp makes it 0700
    made: set[Path] = {root}
    for file in files:
        target = root / file.path
        for folder in reversed(target.parents):
            if folder not in made and folder.is_relative_to(root):
                folder.mkdir()
                os.chmod(folder, _FOLDER_MODE)  # exact: no umask, no setgid from the parent
                made.add(folder)
        mode = _EXECUTABLE_MODE if file.executable else _FILE_MODE
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        with open(os.open(target, flags, mode), "wb") as out:
            os.fchmod(out.fileno(), mode)
            out.write(file.data)


def _swap_into_place(staging: Path, dest: Path) -> Path | None:
    """Rename `staging` to `dest`; what was at `dest` is renamed aside and returned, for the
    caller to remove once the new tree is in place."""
    if not os.path.lexists(dest):
        os.rename(staging, dest)
        return None
    aside = dest.parent / f".{dest.name[:100]}.{secrets.token_hex(6)}.old"
    os.rename(dest, aside)
    try:
        os.rename(staging, dest)
    except BaseException:
        os.rename(aside, dest)
        raise
    return aside


def _remove_tree(path: Path) -> None:
    """Remove a tree even where a folder in it was made read-only; what cannot be removed is
    logged and left (the new tree is in place by then, or there is none)."""

    def make_writable_and_retry(function: Callable[..., Any], name: str, _: Any) -> None:
        os.chmod(os.path.dirname(name), 0o700)
        function(name)

    try:
        if path.is_symlink() or not path.is_dir():
            path.unlink()
        elif sys.version_info >= (3, 12):
            shutil.rmtree(path, onexc=make_writable_and_retry)
        else:
            shutil.rmtree(path, onerror=make_writable_and_retry)
    except OSError as exc:
        log.warning("could not remove %s: %s", path, exc)
