"""A skill package from what a caller names: bytes as they are, a ``.tar.gz`` or ``.zip`` file
read whole, or a skill folder packed into a tar.gz in memory (`pack_folder`).

Packing is deterministic, so the same folder gives the same bytes and the same sha256 wherever
and whenever it is packed, and uploading it again is answered "already uploaded" instead of a
conflict: entries sorted by path, files only (a folder is implied by its files), mode 0755 for
an executable file and 0644 otherwise, mtime 0, owner 0 with no names, and a gzip header
without a name or time. A ``.git`` folder (or file) is left out: it is a checkout's history, not
part of the skill.

A symbolic link or a special file (fifo, socket, device) in the folder is refused before
anything is sent: the control plane would refuse the package anyway, and a link followed here
could pack files from outside the folder. The error is a `ValidationError` with code
``skill_package_invalid`` and ``details`` ``{reason, path}``, with the control plane's reason
words (``link``, ``special_file``) where they exist.
"""

from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
from pathlib import Path, PurePosixPath

from vwm.errors import ValidationError

PackageSource = bytes | str | os.PathLike[str]
"""Package bytes, or the path of a package file or of a skill folder."""

CODE = "skill_package_invalid"
LEFT_OUT = frozenset({".git"})


def read_package(source: PackageSource) -> bytes:
    """The package bytes `source` stands for (see the module's docstring)."""
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source)
    path = Path(source)
    try:
        if path.is_dir():
            return pack_folder(path)
        return path.read_bytes()
    except FileNotFoundError:
        raise _refused("not_found", f"{path} does not exist", path) from None
    except OSError as exc:
        raise _refused("unreadable", f"cannot read {path}: {exc.strerror or exc}", path) from None


def pack_folder(folder: Path) -> bytes:
    """`folder`'s files as a deterministic tar.gz, SKILL.md and all at the archive's root."""
    members = _files(folder)
    out = io.BytesIO()
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0) as compressed,
        tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as archive,
    ):
        for relative, path, executable in members:
            data = path.read_bytes()
            info = tarfile.TarInfo(relative)
            info.size = len(data)
            info.mode = 0o755 if executable else 0o644
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _files(folder: Path) -> list[tuple[str, Path, bool]]:
    """Every file under `folder` as (archive path, path, executable), sorted by archive path;
    refuses links and special files."""
    found: list[tuple[str, Path, bool]] = []
    pending = [folder]
    while pending:
        current = pending.pop()
        with os.scandir(current) as entries:
            for entry in entries:
                if entry.name in LEFT_OUT:
                    continue
                path = Path(entry.path)
                relative = PurePosixPath(*path.relative_to(folder).parts).as_posix()
                mode = entry.stat(follow_symlinks=False).st_mode
                if stat.S_ISLNK(mode):
                    raise _refused(
                        "link",
                        f"{relative} in {folder} is a symbolic link; a skill package holds "
                        "regular files only: copy the file it points to instead",
                        relative,
                    )
                if stat.S_ISDIR(mode):
                    pending.append(path)
                elif stat.S_ISREG(mode):
                    found.append((relative, path, bool(mode & 0o111)))
                else:
                    raise _refused(
                        "special_file",
                        f"{relative} in {folder} is not a regular file (a fifo, socket or "
                        "device); remove it from the skill folder",
                        relative,
                    )
    return sorted(found)


def _refused(reason: str, message: str, path: str | os.PathLike[str]) -> ValidationError:
    return ValidationError(message, code=CODE, details={"reason": reason, "path": str(path)})
