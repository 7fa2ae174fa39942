"""ISO 8601 durations as a Knative delivery spec writes them (``PT0.2S``, ``PT30S``, ``P1D``).
Used by `functions.broker.delivery` for ``backoffDelay`` and ``timeout``.

Written here rather than taken from a library: it is one regular expression, and the libraries
on PyPI answer ``P1M`` (a month, no fixed length) with a calendar object instead of a length of
time. Years and months are refused with a message that says what to write instead; a fraction
is allowed on the last component only (``PT1.5S``, ``PT0.5H``), as ISO 8601 has it; a sign is
refused, because a delay or a timeout is never negative.
"""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import ROUND_HALF_EVEN, Decimal

from functions.broker.errors import InvalidSpec

MAX_CHARS = 64
_NUMBER = r"\d+(?:[.,]\d+)?"
_DURATION = re.compile(
    rf"P(?:(?P<weeks>{_NUMBER})W)?(?:(?P<days>{_NUMBER})D)?"
    rf"(?:T(?:(?P<hours>{_NUMBER})H)?(?:(?P<minutes>{_NUMBER})M)?(?:(?P<seconds>{_NUMBER})S)?)?"
)
_SECONDS = {"weeks": 604_800, "days": 86_400, "hours": 3_600, "minutes": 60, "seconds": 1}


def parse_duration(text: object, *, path: str, code: str = "invalid_delivery") -> timedelta:
    """The length of `text`, to the microsecond. Raises `InvalidSpec` naming `path`."""
    if not isinstance(text, str):
        raise InvalidSpec(
            f"expected an ISO 8601 duration string such as PT0.2S, got {type(text).__name__}",
            path=path,
            code=code,
        )
    match = _DURATION.fullmatch(text) if len(text) <= MAX_CHARS else None
    if match is None or text in ("P", "") or text.endswith("T"):
        raise InvalidSpec(_explain(text), path=path, code=code)
    given = [(name, value) for name, value in match.groupdict().items() if value is not None]
    if any(any(mark in value for mark in ".,") for _, value in given[:-1]):
        raise InvalidSpec(
            f"{text!r}: only the last component may have a fraction (PT1M30.5S, not PT1.5M30S)",
            path=path,
            code=code,
        )
    seconds = sum(
        (Decimal(value.replace(",", ".")) * _SECONDS[name] for name, value in given), Decimal(0)
    )
    micros = int((seconds * 1_000_000).to_integral_value(rounding=ROUND_HALF_EVEN))
    try:
        return timedelta(microseconds=micros)
    except OverflowError:
        raise InvalidSpec(f"{text!r} is too long a duration", path=path, code=code) from None


def _explain(text: str) -> str:
    if len(text) > MAX_CHARS:
        return f"a duration has at most {MAX_CHARS} characters"
    if text.startswith(("-", "+")):
        return f"{text!r}: a duration here cannot be signed or negative; write e.g. PT1S"
    date_part = text[1:].split("T", 1)[0] if text.startswith("P") else ""
    if "Y" in date_part or "M" in date_part:
        return (
            f"{text!r}: years and months have no fixed length; "
            "write days, hours, minutes or seconds (P30D, PT12H)"
        )
    return (
        f"{text!r} is not an ISO 8601 duration: write P[nW][nD][T[nH][nM][nS]] in capitals, "
        "e.g. PT0.2S, PT30S, PT5M, P1D"
    )
