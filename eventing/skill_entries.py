"""The entries of a skill package, read safely from untrusted tar.gz or zip bytes.

Used by `eventing.skill_archive`, for the control plane (validating an upload) and the harness
(unpacking into a workspace). Everything an archive says about itself may lie: a zip's sizes, a
gzip trailer's length, a tar header's type. So entries are read as a stream with running counts,
and reading stops as soon as a limit is passed, before the next chunk is decompressed. Names are
checked and normalized here, once, so nothing after this sees a path that could leave the folder
it is written into.
"""

from __future__ import annotations

import gzip
import io
import re
import stat
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Literal

from eventing.skill_errors import SkillArchiveError, shown
from eventing.skill_rules import ArchiveLimits

__all__ = ["ArchiveFormat", "ArchiveLimits", "Entry", "normalize_path", "read_entries"]

ArchiveFormat = Literal["tar.gz", "zip"]

_CHUNK = 64 << 10
# What a tar stream may hold besides file data, per entry: its header, a pax or GNU long-name
# header for a name up to the path limit, and the padding to a 512-byte block. Bounds the
# decompressed stream, so a bomb hidden in headers (a pax record claiming gigabytes) stops too.
_TAR_OVERHEAD_PER_ENTRY = 4096
_TAR_OVERHEAD_FIXED = 64 << 10
_MAX_SEGMENT_BYTES = 255  # one name in a folder, as Linux file systems allow
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_WINDOWS_DRIVE = re.compile(r"[A-Za-z]:")
_ZIP_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}


@dataclass(frozen=True)
class Entry:
    path: str  # normalized: relative, "/"-separated, no "." or ".." segments
    is_folder: bool
    data: bytes
    executable: bool


def normalize_path(name: str, limits: ArchiveLimits) -> str:
    """`name` (as an archive spells it) as a relative "/"-separated path, or SkillArchiveError.
    "" is the package folder itself (a "./" entry, as ``tar -C dir .`` writes)."""
    if not name:
        raise SkillArchiveError(
            "bad_name", "an entry has an empty name; rebuild the archive", path=name
        )
    if _CONTROL.search(name):
        raise _bad_name(name, "holds a control character (NUL, newline, ...)")
    if _SURROGATE.search(name):
        raise _bad_name(name, "is not UTF-8")
    if name.startswith(("/", "\\")) or _WINDOWS_DRIVE.match(name):
        raise SkillArchiveError(
            "absolute_path",
            f"entry '{shown(name)}' is an absolute path; rebuild the archive with paths "
            "relative to the skill folder",
            path=name,
        )
    if "\\" in name:
        raise _bad_name(name, "holds a backslash; use '/' between folders")
    segments = [segment for segment in name.split("/") if segment not in ("", ".")]
    if ".." in segments:
        raise SkillArchiveError(
            "path_escape",
            f"entry '{shown(name)}' leaves the package folder ('..'); rebuild the archive with "
            "paths relative to the skill folder",
            path=name,
        )
    path = "/".join(segments)
    if len(path) > limits.max_path_chars:
        raise _bad_name(name, f"is longer than {limits.max_path_chars} characters")
    if len(segments) > limits.max_depth:
        raise _bad_name(name, f"is nested deeper than {limits.max_depth} folders")
    if any(len(segment.encode()) > _MAX_SEGMENT_BYTES for segment in segments):
        raise _bad_name(name, f"has a file or folder name over {_MAX_SEGMENT_BYTES} bytes")
    return path


def _bad_name(name: str, why: str) -> SkillArchiveError:
    return SkillArchiveError(
        "bad_name", f"entry '{shown(name)}' {why}; rename it and rebuild the archive", path=name
    )


def read_entries(data: bytes, form: ArchiveFormat, limits: ArchiveLimits) -> list[Entry]:
    """Every entry of the archive, checked: names, types, counts and sizes."""
    budget = _Budget(limits, len(data))
    layout = _Layout()
    reader = _tar_entries if form == "tar.gz" else _zip_entries
    entries = []
    for entry in reader(data, limits, budget):
        layout.add(entry)
        if entry.path:  # the "./" entry is the package folder itself
            entries.append(entry)
    return entries


class _Budget:
    """The running counts of what has been unpacked so far, each checked as it grows."""

    def __init__(self, limits: ArchiveLimits, packed: int) -> None:
        self.limits = limits
        self.packed = packed
        self.entries = 0
        self.total = 0

    def count_entry(self, name: str) -> None:
        self.entries += 1
        if self.entries > self.limits.max_files:
            raise self.too_many_files(name)

    def too_many_files(self, name: str) -> SkillArchiveError:
        return SkillArchiveError(
            "too_many_files",
            f"the archive has more than {self.limits.max_files} files and folders; leave "
            "out what the skill does not need (build output, dependencies, .git)",
            path=name,
            limit=self.limits.max_files,
        )

    def check_declared(self, name: str, size: int) -> None:
        """A header that admits to a file over the limit is refused before reading it (one that
        claims less is not believed: `read` counts what actually comes out)."""
        if size > self.limits.max_file_bytes:
            raise self._file_too_large(name)

    def read(self, name: str, stream: IO[bytes]) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while chunk := stream.read(_CHUNK):
            size += len(chunk)
            self.total += len(chunk)
            if size > self.limits.max_file_bytes:
                raise self._file_too_large(name)
            self._check_total(name)
            chunks.append(chunk)
        return b"".join(chunks)

    def _check_total(self, name: str) -> None:
        limits = self.limits
        if self.total > limits.max_total_bytes:
            raise SkillArchiveError(
                "too_large",
                f"the archive unpacks to more than {limits.max_total_bytes} bytes; leave out "
                "large files the skill does not need",
                path=name,
                limit=limits.max_total_bytes,
            )
        if self.total > max(limits.ratio_grace_bytes, limits.max_ratio * self.packed):
            raise SkillArchiveError(
                "ratio",
                f"the archive unpacks to more than {limits.max_ratio} times its size "
                f"({self.packed} bytes); a compression bomb is refused, pack ordinary files",
                path=name,
                limit=limits.max_ratio,
            )

    def _file_too_large(self, name: str) -> SkillArchiveError:
        return SkillArchiveError(
            "file_too_large",
            f"entry '{shown(name)}' unpacks to more than {self.limits.max_file_bytes} bytes; "
            "leave it out of the skill or make it smaller",
            path=name,
            limit=self.limits.max_file_bytes,
        )


class _Layout:
    """What each path is, so the same path twice, or a path that is a file and a folder at
    once, is refused (written out, one would silently win over the other)."""

    def __init__(self) -> None:
        self.kinds: dict[str, bool] = {}  # path -> is a folder, for entries seen
        self.implied: set[str] = set()  # folders that entries seen are inside

    def add(self, entry: Entry) -> None:
        path = entry.path
        if path in self.kinds:
            raise SkillArchiveError(
                "duplicate",
                f"entry '{shown(path)}' appears twice in the archive; keep one",
                path=path,
            )
        parts = path.split("/")
        folders = ["/".join(parts[:depth]) for depth in range(1, len(parts))] if path else []
        clash = path in self.implied and not entry.is_folder
        clash = clash or any(self.kinds.get(folder) is False for folder in folders)
        if clash:
            raise SkillArchiveError(
                "duplicate",
                f"'{shown(path)}' is both a file and a folder in the archive; rename one",
                path=path,
            )
        self.kinds[path] = entry.is_folder
        self.implied.update(folders)


# -- tar.gz -----------------------------------------------------------------------------------


class _BoundedStream(io.RawIOBase):
    """The decompressed stream, refused past `limit` bytes whatever the headers in it say."""

    def __init__(self, source: io.BufferedIOBase, limit: int) -> None:
        self.source = source
        self.limit = limit
        self.seen = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self.source.read(_CHUNK if size is None or size < 0 else size)
        self.seen += len(data)
        if self.seen > self.limit:
            raise SkillArchiveError(
                "too_large",
                f"the archive unpacks to more than {self.limit} bytes; leave out large files "
                "the skill does not need",
                limit=self.limit,
            )
        return data

    def drain(self) -> None:
        """Read to the end, so a truncated or damaged gzip tail is noticed (tar stops reading
        at its end-of-archive blocks, before the gzip checksum)."""
        while self.read(_CHUNK):
            pass


def _tar_entries(data: bytes, limits: ArchiveLimits, budget: _Budget) -> Iterator[Entry]:
    bound = (
        limits.max_total_bytes
        + (limits.max_files + 1) * _TAR_OVERHEAD_PER_ENTRY
        + _TAR_OVERHEAD_FIXED
    )
    stream = _BoundedStream(gzip.GzipFile(fileobj=io.BytesIO(data), mode="rb"), bound)
    try:
        with tarfile.open(
            fileobj=stream, mode="r|", encoding="utf-8", errors="surrogateescape"
        ) as tar:
            for member in tar:
                yield _tar_entry(tar, member, limits, budget)
        stream.drain()
    except (tarfile.TarError, EOFError, OSError, ValueError, zlib.error, RecursionError) as exc:
        raise SkillArchiveError(
            "corrupt",
            f"the tar.gz archive is truncated or damaged ({shown(str(exc))}); build and upload it again",
        ) from None


def _tar_entry(
    tar: tarfile.TarFile, member: tarfile.TarInfo, limits: ArchiveLimits, budget: _Budget
) -> Entry:
    name = member.name
    budget.count_entry(name)
    path = normalize_path(name, limits)
    if member.issym() or member.islnk():
        raise _link(name)
    if member.isdir():
        return Entry(path, is_folder=True, data=b"", executable=False)
    if not member.isreg() or member.issparse():
        raise _special(name)
    if not path:
        raise _bad_name(name, "is a file without a name")
    budget.check_declared(name, member.size)
    extracted = tar.extractfile(member)
    assert extracted is not None  # a regular member always has a body
    return Entry(path, False, budget.read(name, extracted), bool(member.mode & 0o111))


# -- zip --------------------------------------------------------------------------------------


def _zip_entries(data: bytes, limits: ArchiveLimits, budget: _Budget) -> Iterator[Entry]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
            if len(members) > limits.max_files:  # the central directory is read already
                raise budget.too_many_files(members[limits.max_files].orig_filename)
            for member in members:
                yield _zip_entry(archive, member, limits, budget)
    except NotImplementedError as exc:  # a zip spanning disks, a method zipfile lacks
        raise SkillArchiveError(
            "unsupported",
            f"the zip archive uses a feature that is not supported ({shown(str(exc))}); "
            "build it as one plain zip file with deflate",
        ) from None
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, struct.error, zlib.error) as exc:
        raise SkillArchiveError(
            "corrupt",
            f"the zip archive is truncated or damaged ({shown(str(exc))}); build and upload it again",
        ) from None


def _zip_entry(
    archive: zipfile.ZipFile, member: zipfile.ZipInfo, limits: ArchiveLimits, budget: _Budget
) -> Entry:
    # `orig_filename`: `filename` is cut at a NUL, which would hide one.
    name = member.orig_filename
    budget.count_entry(name)
    path = normalize_path(name, limits)
    # The high 16 bits are the Unix mode when a Unix tool wrote the entry; their type bits are
    # believed whatever system the header claims, so a link cannot pass as a Windows file.
    mode = member.external_attr >> 16
    kind = stat.S_IFMT(mode)
    if stat.S_ISLNK(mode):
        raise _link(name)
    if kind and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise _special(name)
    if name.endswith("/") or stat.S_ISDIR(mode):
        return Entry(path, is_folder=True, data=b"", executable=False)
    if not path:
        raise _bad_name(name, "is a file without a name")
    if member.flag_bits & 0x1 or member.compress_type not in _ZIP_METHODS:
        raise SkillArchiveError(
            "unsupported",
            f"entry '{shown(name)}' is encrypted or uses an unknown compression method; build "
            "the zip without a password, with deflate",
            path=name,
        )
    budget.check_declared(name, member.file_size)
    with archive.open(member) as stream:
        data = budget.read(name, stream)
    return Entry(path, False, data, bool(mode & 0o111))


def _link(name: str) -> SkillArchiveError:
    return SkillArchiveError(
        "link",
        f"entry '{shown(name)}' is a link; links are refused, put the file itself in the archive",
        path=name,
    )


def _special(name: str) -> SkillArchiveError:
    return SkillArchiveError(
        "special_file",
        f"entry '{shown(name)}' is not a regular file or folder (a device, fifo, socket or "
        "sparse file); leave it out of the archive",
        path=name,
    )
