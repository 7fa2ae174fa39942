"""Why a skill package was refused: one error with a stable reason word (`eventing.skill_archive`).

The control plane answers an upload with it (422, code ``skill_archive_invalid``, or
``skill_checksum_mismatch``), and the harness refuses to unpack with the same one, so a caller
branches on ``details.reason`` and never on the message. Entry names come from the archive, so
what an error shows of them is escaped and cut: a name may hold control characters, NUL (which
PostgreSQL refuses in text) or be long enough to flood a log line.
"""

from __future__ import annotations

from typing import Any

from eventing.errors import VwmError

# The stable words of ``details.reason``, documented for callers.
REASONS = (
    "not_an_archive",  # neither gzip (tar.gz) nor zip by its first bytes
    "corrupt",  # truncated or damaged compressed data, headers or checksums
    "unsupported",  # an encrypted zip entry or an unknown compression method
    "too_large",  # the archive itself, or everything unpacked, is over the limit
    "too_many_files",  # more entries (files and folders) than allowed
    "file_too_large",  # one unpacked file is over the limit
    "ratio",  # unpacks to far more than its size: a compression bomb
    "link",  # a symbolic or hard link
    "special_file",  # a device, fifo, socket, sparse file or unknown entry type
    "absolute_path",  # /x, C:\x, C:x, \\server\x
    "path_escape",  # a '..' segment
    "bad_name",  # empty, backslash, control character, not UTF-8, too long or too deep
    "duplicate",  # the same path twice, or one path both a file and a folder
    "no_manifest",  # no SKILL.md at the root nor in the one top folder
    "bad_manifest",  # front matter missing or invalid, or a bad name/version/description
    "checksum_mismatch",  # the archive's SHA-256 is not the one expected
)

_SHOWN_CHARS = 200


def shown(name: str) -> str:
    """`name` safe to put in a message, a log line or a JSON column: non-printable characters
    (NUL, controls, undecodable bytes kept as surrogates) escaped, long names cut."""
    escaped = "".join(
        char if char.isprintable() else char.encode("unicode_escape").decode("ascii")
        for char in name[:_SHOWN_CHARS]
    )
    return escaped + ("…" if len(name) > _SHOWN_CHARS else "")


class SkillArchiveError(VwmError):
    """A skill package that cannot be used as it is. ``details``: ``reason`` (one of `REASONS`),
    ``path`` (the entry at fault, escaped) when there is one, and any facts the reason has."""

    code = "skill_archive_invalid"
    status = 422
    retryable = False

    def __init__(self, reason: str, message: str, /, *, path: str | None = None, **facts: Any):
        if path is not None:
            facts["path"] = shown(path)
        super().__init__(message, reason=reason, **facts)
        self.reason = reason


class SkillChecksumMismatch(SkillArchiveError):
    """The archive is not the one the caller meant: its SHA-256 differs from the expected one."""

    code = "skill_checksum_mismatch"

    def __init__(self, expected: str, actual: str) -> None:
        super().__init__(
            "checksum_mismatch",
            f"the archive's SHA-256 is {actual}, not the expected {shown(expected)}; upload the "
            "archive again, or check that the checksum given is of this file",
            expected=shown(expected),
            actual=actual,
        )
