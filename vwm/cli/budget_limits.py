"""A budget limit as given on the command line (`vwm worker budget`, `vwm session budget`): a
number, or ``none`` to remove the limit (docs/budgets.md). A value that is neither is a usage
error (exit 2) before anything is sent; whether a number is allowed (not negative, not too big)
is the control plane's to say, so its answer and error code stay the only rule."""

from __future__ import annotations

import math

import typer

NO_LIMIT = "none"


def parse_limit(value: str, option: str, *, tokens: bool) -> int | float | None:
    """``none`` → None; tokens are whole numbers (``1.5`` is refused, never truncated), USD
    any finite number."""
    text = value.strip()
    if text.lower() == NO_LIMIT:
        return None
    try:
        number: int | float = int(text) if tokens else float(text)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        kind = "a whole number of tokens" if tokens else "an amount in USD"
        raise typer.BadParameter(f"{value!r} is not {kind} or {NO_LIMIT!r}", param_hint=option)
    return number
