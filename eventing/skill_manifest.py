"""A skill's manifest: the YAML front matter at the start of its SKILL.md, read and checked.

Used by `eventing.skill_archive`. The rules are the ones the agent CLIs apply to a skill (a name
Claude Code, Codex and Gemini all accept) plus a semantic version, which the control plane
orders a skill's uploads by. The front matter is stored as it was parsed (`SkillManifest.fields`),
so it must be something JSON and PostgreSQL can hold: no YAML aliases (a few lines of nested
aliases expand to gigabytes once serialized), no dates (kept as the text they were written as),
no binary, sets, NaN or NUL.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import yaml

from eventing.skill_errors import SkillArchiveError, shown
from eventing.skill_rules import MANIFEST_NAME, NAME_PATTERN, NAME_RULE

# semver.org's own pattern: no leading zeros in numbers, prerelease and build identifiers.
_NUMBER = r"(?:0|[1-9][0-9]*)"
_PRERELEASE_ID = r"(?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)"
_BUILD_ID = r"[0-9A-Za-z-]+"
VERSION_PATTERN = (
    rf"^{_NUMBER}\.{_NUMBER}\.{_NUMBER}"
    rf"(?:-{_PRERELEASE_ID}(?:\.{_PRERELEASE_ID})*)?(?:\+{_BUILD_ID}(?:\.{_BUILD_ID})*)?$"
)
MAX_VERSION_CHARS = 128
MAX_DESCRIPTION_CHARS = 1024
MAX_FRONT_MATTER_CHARS = 64 << 10
_MAX_NESTING = 32

_NAME = re.compile(NAME_PATTERN)
_VERSION = re.compile(VERSION_PATTERN)
_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(?P<yaml>.*?)^---[ \t]*\r?$", re.DOTALL | re.MULTILINE)
_BLANK_LINE = re.compile(r"\n[ \t\r]*\n")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # tab and newline are text
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"

VERSION_RULE = "a semantic version MAJOR.MINOR.PATCH[-prerelease][+build], such as 1.2.0"
DESCRIPTION_RULE = (
    f"one paragraph of 1 to {MAX_DESCRIPTION_CHARS} characters saying what the skill does and "
    "when to use it"
)


@dataclass(frozen=True)
class SkillManifest:
    name: str  # NAME_PATTERN: what Claude Code, Codex and Gemini accept as a skill name
    version: str  # VERSION_PATTERN: semantic version MAJOR.MINOR.PATCH[-prerelease][+build]
    description: str  # 1..1024 characters, one paragraph (surrounding whitespace removed)
    fields: dict[str, Any]  # the whole front matter as parsed


class _FrontMatterLoader(yaml.SafeLoader):
    """`yaml.safe_load`'s loader, except that a date stays the text it was written as."""


_FrontMatterLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def parse_manifest(raw: bytes) -> SkillManifest:
    """The manifest of a SKILL.md, or SkillArchiveError(bad_manifest) saying what to fix."""
    fields = _front_matter(raw)
    name = _text_field(fields, "name", NAME_RULE)
    if not _NAME.fullmatch(name):
        raise _bad("name", f"'name' is '{shown(name)}'; it must be {NAME_RULE}")
    version = _text_field(fields, "version", VERSION_RULE)
    if len(version) > MAX_VERSION_CHARS or not _VERSION.fullmatch(version):
        raise _bad("version", f"'version' is '{shown(version)}'; it must be {VERSION_RULE}")
    description = _text_field(fields, "description", DESCRIPTION_RULE).strip()
    if not description or len(description) > MAX_DESCRIPTION_CHARS:
        raise _bad(
            "description",
            f"'description' has {len(description)} characters; write {DESCRIPTION_RULE}",
        )
    if _BLANK_LINE.search(description) or _CONTROL.search(description):
        raise _bad(
            "description",
            f"'description' has a blank line or a control character; write {DESCRIPTION_RULE}",
        )
    return SkillManifest(name=name, version=version, description=description, fields=fields)


def _front_matter(raw: bytes) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise _bad(
            None, f"SKILL.md is not UTF-8 text (byte {exc.start}); save it as UTF-8"
        ) from None
    found = _FRONT_MATTER.match(text[: MAX_FRONT_MATTER_CHARS + 8])
    if found is None:
        raise _bad(
            None,
            "SKILL.md must start with YAML front matter between two '---' lines (at most "
            f"{MAX_FRONT_MATTER_CHARS} characters) holding name, version and description",
        )
    source = found.group("yaml")
    try:
        if any(
            isinstance(token, yaml.AliasToken | yaml.AnchorToken)
            for token in yaml.scan(source, Loader=_FrontMatterLoader)
        ):
            raise _bad(
                None, "SKILL.md's front matter uses YAML anchors or aliases; write values out"
            )
        fields = yaml.load(source, Loader=_FrontMatterLoader)  # noqa: S506 (a SafeLoader)
    except (yaml.YAMLError, RecursionError) as exc:
        raise _bad(None, f"SKILL.md's front matter is not valid YAML: {shown(str(exc))}") from None
    if not isinstance(fields, dict):
        raise _bad(
            None, "SKILL.md's front matter must be a mapping of fields (name: ..., version: ...)"
        )
    _check_storable(fields, "front matter", 0)
    return fields


def _text_field(fields: dict[str, Any], field: str, rule: str) -> str:
    value = fields.get(field)
    if value is None:
        raise _bad(field, f"SKILL.md's front matter has no '{field}'; add {rule}")
    if not isinstance(value, str):
        raise _bad(
            field,
            f"'{field}' is a {type(value).__name__}, not text; write {rule} (quote it if YAML "
            "reads it as a number)",
        )
    return value


def _check_storable(value: Any, where: str, depth: int) -> None:
    """Refuse what JSON or PostgreSQL cannot hold, so the stored fields are the parsed ones."""
    if depth > _MAX_NESTING:
        raise _bad(None, f"SKILL.md's front matter nests deeper than {_MAX_NESTING} levels")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise _bad(None, f"a key in SKILL.md's {where} is not text ({shown(repr(key))})")
            _check_storable(key, where, depth + 1)
            _check_storable(item, f"{where} '{shown(key)}'", depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_storable(item, where, depth + 1)
    elif isinstance(value, str):
        if "\x00" in value:
            raise _bad(None, f"SKILL.md's {where} holds a NUL character; remove it")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise _bad(None, f"SKILL.md's {where} holds {value}; write a finite number or text")
    elif not (value is None or isinstance(value, bool | int)):
        raise _bad(
            None,
            f"SKILL.md's {where} holds a {type(value).__name__}; use text, numbers, true/false, "
            "lists and mappings",
        )


def _bad(field: str | None, message: str) -> SkillArchiveError:
    facts = {"field": field} if field else {}
    return SkillArchiveError("bad_manifest", message, path=MANIFEST_NAME, **facts)
