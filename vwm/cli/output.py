"""How the command line prints: JSON documents, tables, token counts and costs.

Data goes to stdout (so it can be piped); decoration, progress and errors go to stderr.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from eventing.agent_events import Usage

MAX_CELL = 60
PIPE_WIDTH = 1000  # what goes to a pipe or file is not folded to a terminal width


def stdout() -> Console:
    # Made per call: the test runner swaps sys.stdout between invocations.
    console = Console()
    return console if console.is_terminal else Console(width=PIPE_WIDTH)


def stderr() -> Console:
    console = Console(stderr=True)
    return console if console.is_terminal else Console(stderr=True, width=PIPE_WIDTH)


def spinner(message: str) -> AbstractContextManager[Any]:
    """A spinner on stderr while something is waited for; only when stderr is a terminal."""
    console = stderr()
    return console.status(message) if console.is_terminal else nullcontext()


def print_json(document: Any) -> None:
    typer.echo(json.dumps(document, indent=2, ensure_ascii=False, default=str))


def print_table(
    rows: Iterable[Mapping[str, Any]], columns: Sequence[str] = (), *, empty: str = "nothing"
) -> None:
    """A table of ``rows``. ``columns`` are the preferred ones (nested fields as ``a.b``); those
    no row has are left out, and with none of them present every scalar field is shown."""
    flat = [flatten(row) for row in rows]
    if not flat:
        stderr().print(f"[dim]({empty})[/dim]")
        return
    present = {key for row in flat for key in row}
    chosen = [column for column in columns if column in present]
    if not chosen:
        chosen = list(dict.fromkeys(key for row in flat for key in row))
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for column in chosen:
        table.add_column(column, overflow="fold")
    for row in flat:
        table.add_row(*(cell(row.get(column)) for column in chosen))
    stdout().print(table)


def flatten(row: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys: ``{"tokens": {"input": 3}}`` → ``{"tokens.input": 3}``."""
    flat: dict[str, Any] = {}
    for key, value in row.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}".rstrip("0").rstrip(".")
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    text = text.replace("\n", " ")
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


def tokens_text(usage: Usage) -> str:
    prompt = usage.input + usage.cache_read + usage.cache_write
    cached = f" ({usage.cache_read:,} cached)" if usage.cache_read else ""
    return f"{prompt:,} in{cached} / {usage.output:,} out tokens"


MONEY_SIGNIFICANT_DIGITS = 4


def usd(amount: float) -> str:
    """Dollars to 4 significant digits, never fewer than cents: ``$0.0009435``, ``$0.01234``,
    ``$1.235``, ``$1,234.57``, ``$0.50``, ``$0.00``. A job's cost is often a fraction of a
    cent, which whole cents would show as nothing; more digits are float noise."""
    if amount == 0:
        return "$0.00"
    magnitude = math.floor(math.log10(abs(amount)))
    decimals = max(2, MONEY_SIGNIFICANT_DIGITS - 1 - magnitude)
    text = f"{abs(round(amount, decimals)):,.{decimals}f}"
    whole, _, fraction = text.partition(".")
    fraction = fraction.rstrip("0").ljust(2, "0")  # $0.50, not $0.5000
    return f"{'-' if amount < 0 else ''}${whole}.{fraction}"


def cost_text(cost_usd: float | None, cost_source: str | None) -> str:
    """A job's cost as money with where it came from, or ``cost unknown``."""
    if cost_usd is None:
        return "cost unknown"
    return usd(cost_usd) + (f" ({cost_source})" if cost_source else "")
