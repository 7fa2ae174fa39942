# ruff: noqa: RUF001, RUF003  (look-alike digits are what this corpus is made of)
"""A hand-written corpus of hostile input, shared by the control plane's and the harness's
hostile-input tests: JSON bodies, integers, timestamps, query values, URL path segments and
`Last-Event-ID` values that must each get a 4xx with a stable code, never a 500.

Each entry names what it is, the bytes (or text) to send and what the edge must answer. The
rules are `eventing.inputs`'s; the edges add their own model validation (422) on top.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass(frozen=True)
class Case:
    """One request and the answer it must get."""

    method: str
    path: str
    status: int
    code: str
    params: list[tuple[str, str | int | float | bool | None]] | None = None
    headers: dict[str, Any] = field(default_factory=dict)
    content: bytes | None = None
    details: dict[str, Any] = field(default_factory=dict)  # must be part of error.details


def wrong_answers(client: httpx.Client, cases: list[Case]) -> str:
    """Send every case; describe each answer that is not the expected error ("" if none)."""
    wrong = []
    for case in cases:
        response = client.request(
            case.method, case.path, params=case.params, headers=case.headers, content=case.content
        )
        try:
            error = response.json()["error"]
            got = (response.status_code, error["code"])
            details_ok = case.details.items() <= (error.get("details") or {}).items()
            if got != (case.status, case.code) or not details_ok or not error["message"]:
                wrong.append((case, response.status_code, response.text[:300]))
        except (ValueError, KeyError, TypeError):
            wrong.append((case, response.status_code, response.text[:300]))
    return "\n".join(
        f"{c.method} {c.path[:80]} {str(c.params)[:80]} {str(c.headers)[:60]} "
        f"{(c.content or b'')[:60]!r}: want {c.status} {c.code} {c.details}, got {s} {t}"
        for c, s, t in wrong
    )


@dataclass(frozen=True)
class Body:
    label: str
    raw: bytes
    status: int
    code: str
    reason: str | None = None  # `details.reason`, where the code has one
    content_type: str | None = "application/json"


def _nest(depth: int, inner: str = "1", kind: str = "[") -> str:
    if kind == "[":
        return "[" * depth + inner + "]" * depth
    return '{"a":' * depth + inner + "}" * depth


def _with(base: dict[str, Any], key: str, literal: str) -> bytes:
    """`base` as JSON with one more member whose value is the raw JSON text `literal`."""
    text = json.dumps(base)
    return (text[:-1] + f', "{key}": {literal}}}').encode()


def json_bodies(base: dict[str, Any]) -> list[Body]:
    """Bodies every JSON endpoint must refuse before its model sees them. `base` is a body the
    endpoint would accept; hostile members are added to it or it is broken."""
    good = json.dumps(base)
    invalid, too_deep = "invalid_json", "too_deep"
    return [
        # nesting: measured before parsing, arrays and objects, top level and inside a member
        Body("deep arrays", _nest(100_000).encode(), 400, invalid, too_deep),
        Body("deep objects", _nest(20_000, kind="{").encode(), 400, invalid, too_deep),
        Body("deep unterminated", b"[" * 50_000, 400, invalid, too_deep),
        Body("deep mixed", ('[{"a":' * 40 + "1" + "}]" * 40).encode(), 400, invalid, too_deep),
        Body("65 levels in a member", _with(base, "x", _nest(64)), 400, invalid, too_deep),
        Body("deep in a member", _with(base, "x", _nest(5_000, kind="{")), 400, invalid, too_deep),
        # numbers JSON has not got, or that no column can hold
        Body("NaN", _with(base, "x", "NaN"), 400, invalid, "number"),
        Body("Infinity", _with(base, "x", "Infinity"), 400, invalid, "number"),
        Body("-Infinity", _with(base, "x", "[-Infinity]"), 400, invalid, "number"),
        Body("float overflow", _with(base, "x", "1e999"), 400, invalid, "number"),
        Body("negative overflow", _with(base, "x", "-1.5e400"), 400, invalid, "number"),
        Body("long float literal", _with(base, "x", "1" * 400 + ".0"), 400, invalid, "number"),
        Body("int past 64 bits", _with(base, "x", str(2**63)), 400, invalid, "number"),
        Body("int below 64 bits", _with(base, "x", str(-(2**63) - 1)), 400, invalid, "number"),
        Body("5000-digit int", _with(base, "x", "9" * 5000), 400, invalid, "number"),
        Body(
            "huge int nested", _with(base, "x", '{"y": [' + "7" * 30 + "]}"), 400, invalid, "number"
        ),
        # text no database or process can take, and bytes that are not UTF-8
        Body("NUL in a value", _with(base, "x", '"a\\u0000b"'), 400, invalid, "nul_character"),
        Body("NUL in a key", _with(base, "a\\u0000", "1"), 400, invalid, "nul_character"),
        Body("NUL nested", _with(base, "x", '[{"y": "\\u0000"}]'), 400, invalid, "nul_character"),
        Body("lone high surrogate", _with(base, "x", '"\\ud800"'), 400, invalid, "encoding"),
        Body("lone low surrogate", _with(base, "x", '"\\udfff x"'), 400, invalid, "encoding"),
        Body("latin-1 byte", good.encode()[:-1] + b', "x": "\xe9"}', 400, invalid, "encoding"),
        Body(
            "overlong UTF-8", good.encode()[:-1] + b', "x": "\xc0\xaf"}', 400, invalid, "encoding"
        ),
        Body("invalid start byte", b"\xff" + good.encode(), 400, invalid, "encoding"),
        Body("UTF-16", good.encode("utf-16"), 400, invalid, "encoding"),
        Body("UTF-8 BOM", b"\xef\xbb\xbf" + good.encode(), 400, invalid, "syntax"),
        # structure
        Body("duplicate key", _with(base, next(iter(base)), "1"), 400, invalid, "duplicate_key"),
        Body(
            "duplicate nested key",
            _with(base, "x", '{"y": 1, "y": 2}'),
            400,
            invalid,
            "duplicate_key",
        ),
        Body("empty", b"", 400, invalid, "empty"),
        Body("whitespace", b" \n\t ", 400, invalid, "empty"),
        Body("array", b"[]", 400, invalid, "not_object"),
        Body("array of the body", f"[{good}]".encode(), 400, invalid, "not_object"),
        Body("string", b'"{}"', 400, invalid, "not_object"),
        Body("number", b"42", 400, invalid, "not_object"),
        Body("null", b"null", 400, invalid, "not_object"),
        Body("true", b"true", 400, invalid, "not_object"),
        Body("truncated", good.encode()[:-1], 400, invalid, "syntax"),
        Body("single quotes", good.replace('"', "'").encode(), 400, invalid, "syntax"),
        Body("trailing comma", good.encode()[:-1] + b",}", 400, invalid, "syntax"),
        Body("comment", b"// hi\n" + good.encode(), 400, invalid, "syntax"),
        Body("two documents", good.encode() * 2, 400, invalid, "syntax"),
        Body("NUL byte outside strings", good.encode() + b"\x00", 400, invalid, "syntax"),
        # media types other than JSON
        *[
            Body(f"content type {kind}", good.encode(), 415, "unsupported_media_type", None, kind)
            for kind in (
                "text/plain",
                "application/x-www-form-urlencoded",
                "multipart/form-data; boundary=x",
                "application/xml",
                "application/json; charset=latin-1",
                "application/octet-stream",
                "json",
            )
        ],
    ]


# Texts that look like whole numbers to `str.isdigit()` or to pydantic's lax mode, and are not
# plain ASCII digits; a sequence number, count or limit written like this is refused.
NOT_ASCII_INTEGERS = [
    "٣",  # Arabic-Indic three
    "۳",  # Extended Arabic-Indic three
    "３",  # fullwidth three
    "²",  # superscript two: isdigit() is True, int() fails
    "₃",  # subscript three
    "१",  # Devanagari one
    "𝟙",  # mathematical double-struck one
    "1٣",
    "+1",
    "-1",
    " 1",
    "1 ",
    "1_000",
    "1.0",
    "1e3",
    "0x10",
    "１０",
    "9" * 19,  # past 64 bits
    "9" * 5000,  # past Python's int() digit limit
    "one",
]

# Times that cannot be read as an instant in UTC.
BAD_TIMESTAMPS = [
    "yesterday",
    "２０２５-06-01",
    "٢٠٢٥-06-01",
    "2025-13-01",
    "2025-06-31",
    "2025-06-01T25:00:00",
    "2025-06-01T10:00:00+99:00",
    "9999-12-31T23:59:59-23:00",  # past year 9999 in UTC
    "0001-01-01T00:00:00+01:00",  # before year 1 in UTC
    "1748736000",  # seconds since 1970: not ISO 8601
    "2025-06-01T10:00:00 UTC",
    "",
    "x" * 100,
]

# Times without a zone, read as UTC, and other forms that are fine.
GOOD_TIMESTAMPS = [
    "2025-06-01",
    "2025-06-01T00:00:00",
    "2025-06-01T10:00",
    "2025-06-01T10:00:00.123456",
    "2025-06-01T10:00:00Z",
    "2025-06-01T10:00:00+02:00",
    "2025-06-01T10:00:00-08:00",
    "0001-01-01",
    "9999-12-31T23:59:59",
]

CONTROL_CHARACTERS = ["\x00", "\x01", "\x08", "\x1b", "\x7f", "\x85", "\x9f", "\r\n"]

# URL path segments (percent-encoded as sent) that cannot name anything: ids, names and keys are
# printable ASCII.
BAD_SEGMENTS = [
    ("%D9%A3", "not_ascii"),  # ٣
    ("%EF%BC%93", "not_ascii"),  # ３
    ("caf%C3%A9", "not_ascii"),
    ("%E2%80%AE", "not_ascii"),  # right-to-left override
    ("%00", "control_character"),
    ("a%00b", "control_character"),
    ("a%0Ab", "control_character"),
    ("a%1Bb", "control_character"),
    ("a%7F", "control_character"),
    ("a%20b", "character"),
    ("a%22b", "character"),
    ("a%5Cb", "character"),
    ("a" * 201, "too_long"),
    ("%FF", "not_ascii"),  # not UTF-8
]


def body_cases(writes: list[tuple[str, str, dict[str, Any]]]) -> list[Case]:
    """Every hostile JSON body sent to every writing route, each with the answer it must get."""
    return [
        Case(
            method,
            path,
            body.status,
            body.code,
            headers={"content-type": body.content_type} if body.content_type else {},
            content=body.raw,
            details={"reason": body.reason} if body.reason else {},
        )
        for method, path, base in writes
        for body in json_bodies(base)
    ]
