"""Strict readers for untrusted request input, the same on both HTTP edges (the control plane's
`functions.http`/`functions.params` and the harness's `harness.http`/`harness.sse`).

Pure functions, no web framework: each edge calls them and maps an `InputError` to its own error
response. The rules exist because the lenient defaults fail late, as a 500, far from the input:
`str.isdigit()` accepts Arabic-Indic, fullwidth and superscript digits (and `int()` then parses or chokes on them); `json.loads`
recurses once per nesting level, takes `NaN` and `1e999`, keeps the last of duplicate keys and
lone surrogates that no database can store; PostgreSQL refuses NUL in text and JSON; a naive
timestamp cannot be compared with a stored UTC one.

Error codes (stable, documented in docs/control-plane.md and docs/harness.md):
`invalid_json` (400, `details.reason` says which rule), `invalid_parameter` (400, `details.parameter`
and `details.reason`), `unsupported_media_type` (415).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from eventing.errors import UNSUPPORTED_MEDIA_TYPE, VwmError

MAX_JSON_DEPTH = 64
MAX_PARAMETER_CHARS = 8192
MAX_SEGMENT_CHARS = 200
# A sequence number or count: ASCII digits only, at most 18 of them (fits a signed 64-bit int).
_ASCII_UINT = re.compile(r"[0-9]{1,18}")
_INT64 = (-(2**63), 2**63 - 1)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
# One JSON string (also one cut off at the end) or one bracket: all the depth scan needs to see.
_JSON_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|[\[\]{}]', re.DOTALL)
# A URL path segment: ids, names and setting keys are all of these (and the route words too).
PATH_SEGMENT_PATTERN = r"[A-Za-z0-9._~:-]{1,200}"
_PATH_SEGMENT = re.compile(r"[A-Za-z0-9._~:-]*")
_JSON_TYPES = ("application/json",)

JSON_REASONS = (
    "empty",
    "encoding",
    "syntax",
    "too_deep",
    "number",
    "duplicate_key",
    "nul_character",
    "not_object",
)
PARAMETER_REASONS = (
    "repeated",
    "control_character",
    "too_long",
    "not_ascii",
    "character",
    "not_integer",
)


class InputError(VwmError, ValueError):
    """Input the edge refuses. A ValueError, so a pydantic validator that raises it turns it into
    a field error; elsewhere the edge answers `status`: 400, or 415 for the media type."""

    status = 400

    def __init__(self, code: str, message: str, /, **details: Any) -> None:
        super().__init__(message, **details)
        self.code = code
        if code == UNSUPPORTED_MEDIA_TYPE:
            self.status = 415


def _bad_json(reason: str, message: str) -> InputError:
    return InputError("invalid_json", message, reason=reason)


def bad_parameter(parameter: str, reason: str, message: str) -> InputError:
    return InputError("invalid_parameter", message, parameter=parameter, reason=reason)


# -- JSON bodies ------------------------------------------------------------------------------


def check_json_content_type(content_type: str | None) -> None:
    """A JSON body may come without a content type (curl, older clients) but not with another
    one: `application/json` or `application/*+json`, in UTF-8 if a charset is named."""
    if not content_type:
        return
    media, _, params = content_type.partition(";")
    media = media.strip().lower()
    charset = ""
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"').lower()
    json_type = media in _JSON_TYPES or (
        media.startswith("application/") and media.endswith("+json")
    )
    if not json_type or charset not in ("", "utf-8", "utf8"):
        raise InputError(
            "unsupported_media_type",
            "send the body as JSON with 'Content-Type: application/json' (UTF-8)",
            content_type=content_type[:200],
        )


def load_json_object(raw: bytes, max_depth: int = MAX_JSON_DEPTH) -> dict[str, Any]:
    """`raw` as a JSON object, or InputError(`invalid_json`). Nesting is measured before parsing,
    so a deep body is refused without recursing into it."""
    if not raw.strip():
        raise _bad_json("empty", "the request needs a JSON object body")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _bad_json("encoding", f"the request body is not UTF-8 (byte {exc.start})") from None
    _check_depth(text, max_depth)
    try:
        data = json.loads(
            text,
            parse_constant=_no_constant,
            parse_int=_int64,
            parse_float=_finite_float,
            object_pairs_hook=_unique_keys,
        )
    except InputError:
        raise
    except (json.JSONDecodeError, RecursionError) as exc:
        raise _bad_json("syntax", f"the request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise _bad_json("not_object", "the request body must be a JSON object")
    _check_strings(data)
    return data


def _check_depth(text: str, max_depth: int) -> None:
    depth = 0
    for match in _JSON_TOKEN.finditer(text):
        lexeme = match.group()
        if lexeme in ("[", "{"):
            depth += 1
            if depth > max_depth:
                raise _bad_json(
                    "too_deep", f"the request body nests deeper than {max_depth} levels"
                )
        elif lexeme in ("]", "}"):
            depth -= 1


def _no_constant(name: str) -> Any:
    raise _bad_json("number", f"{name} is not a JSON number; send a finite number or null")


def _int64(literal: str) -> int:
    # Length first: int() of a very long literal is slow, and past 4300 digits Python refuses it.
    value = int(literal) if len(literal.lstrip("-")) <= 19 else None
    if value is None or not _INT64[0] <= value <= _INT64[1]:
        raise _bad_json("number", "a number in the body is outside the 64-bit integer range")
    return value


def _finite_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise _bad_json("number", "a number in the body is too large for a 64-bit float")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data = dict(pairs)
    if len(data) != len(pairs):
        keys = [key for key, _ in pairs]
        duplicate = next(key for key in keys if keys.count(key) > 1)
        raise _bad_json("duplicate_key", f"the key {duplicate[:100]!r} appears twice in an object")
    return data


def _check_strings(value: Any) -> None:
    """No NUL and no lone surrogate in any key or string: neither can be stored (PostgreSQL
    text and JSONB refuse NUL; UTF-8 has no surrogates) nor passed to a process."""
    strings: Iterable[Any]
    if isinstance(value, dict):
        strings = (*value.keys(), *value.values())
    elif isinstance(value, list):
        strings = value
    elif isinstance(value, str):
        if "\x00" in value:
            raise _bad_json("nul_character", "strings in the body may not contain NUL (\\u0000)")
        if _SURROGATE.search(value):
            raise _bad_json("encoding", "a string in the body holds a lone UTF-16 surrogate")
        return
    else:
        return
    for item in strings:
        _check_strings(item)


# -- query parameters, path segments, headers -------------------------------------------------


def check_query(
    items: Iterable[tuple[str, str]],
    *,
    free_text: Iterable[str] = (),
    max_chars: int = MAX_PARAMETER_CHARS,
) -> None:
    """Each query parameter at most once, not overlong, without control characters (except
    in `free_text` parameters, whose owner checks their content, like a file path)."""
    free = set(free_text)
    seen: set[str] = set()
    for name, value in items:
        label = name[:100]
        if name in seen:
            raise bad_parameter(label, "repeated", f"send the query parameter {label!r} once")
        seen.add(name)
        if len(name) > MAX_SEGMENT_CHARS or len(value) > max_chars:
            raise bad_parameter(
                label, "too_long", f"the query parameter {label!r} is over {max_chars} characters"
            )
        if _CONTROL.search(name) or (name not in free and _CONTROL.search(value)):
            raise bad_parameter(
                label, "control_character", f"the query parameter {label!r} has control characters"
            )


def check_path(path: str) -> None:
    """The URL path holds only printable ASCII segments of bounded length: every id, name and
    key in a route is ASCII, so anything else cannot name a resource."""
    for segment in path.split("/"):
        if len(segment) > MAX_SEGMENT_CHARS:
            raise bad_parameter(
                "path", "too_long", f"a segment of the URL path is over {MAX_SEGMENT_CHARS} chars"
            )
        if not _PATH_SEGMENT.fullmatch(segment):
            reason = (
                "control_character"
                if _CONTROL.search(segment)
                else "not_ascii"
                if not segment.isascii()
                else "character"
            )
            raise bad_parameter(
                "path", reason, "the URL path may only hold ASCII letters, digits and . _ - ~ :"
            )


def ascii_uint(raw: str, parameter: str) -> int:
    """A non-negative integer written in ASCII digits (no sign, space, '_' or other scripts'
    digits), at most 18 of them."""
    if not _ASCII_UINT.fullmatch(raw):
        reason = "not_ascii" if not raw.isascii() else "not_integer"
        raise bad_parameter(
            parameter, reason, f"{parameter} must be a whole number in ASCII digits, like 42"
        )
    return int(raw)


def timestamp(raw: str) -> datetime:
    """An ISO 8601 date or date-time as an aware UTC datetime; one without a zone is UTC
    (`2025-06-01` is midnight UTC)."""
    if not raw.isascii() or _CONTROL.search(raw) or len(raw) > 64:
        raise ValueError("use an ISO 8601 date or date-time, e.g. 2026-11-25 or 2026-11-25T10:00Z")
    try:
        parsed = datetime.fromisoformat(raw)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        raise ValueError(
            "use an ISO 8601 date or date-time between years 1 and 9999 in UTC, "
            "e.g. 2026-11-25 or 2026-11-25T10:00:00Z"
        ) from None
