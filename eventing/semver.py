"""Semantic version precedence (semver.org, section 11): which of two versions is higher.

Used to find a skill's latest version (a worker that follows a skill gets its highest version,
not its newest upload: a 1.4.1 bug fix uploaded after 2.0.0 is not "the latest").
"""

from __future__ import annotations

import re

_SEMVER = re.compile(
    r"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)"
    r"(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?"
)

# A prerelease identifier compares numerically when it is a number, else as ASCII text, and a
# number is lower than text: (0, n, "") for numbers, (1, 0, text) for words.
_Identifier = tuple[int, int, str]
PrecedenceKey = tuple[int, int, int, int, tuple[_Identifier, ...]]


def is_semver(value: str) -> bool:
    return _SEMVER.fullmatch(value) is not None


def precedence_key(version: str) -> PrecedenceKey:
    """A sort key: `a` is lower than `b` exactly when its key is. Build metadata is ignored; a
    version with a prerelease is lower than the same version without. Raises ValueError for
    anything that is not a semantic version."""
    found = _SEMVER.fullmatch(version)
    if found is None:
        raise ValueError(f"{version!r} is not a semantic version (MAJOR.MINOR.PATCH[-pre])")
    major, minor, patch, prerelease = found.groups()
    if prerelease is None:
        return (int(major), int(minor), int(patch), 1, ())
    identifiers = tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part) for part in prerelease.split(".")
    )
    return (int(major), int(minor), int(patch), 0, identifiers)


def highest(versions: list[str]) -> str | None:
    """The highest of `versions` (None when there are none)."""
    return max(versions, key=precedence_key, default=None)
