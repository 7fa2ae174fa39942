"""How the command line prints: JSON documents, tables, token counts and costs.

Data goes to stdout (so it can be piped); decoration, progress and errors go to stderr.
"""

from __future__ import annotations

import json
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


def cost_text(cost_usd: float | None, cost_source: str | None) -> str:
    if cost_usd is None:
        return "cost unknown"
    return f"${cost_usd:.4f}" + (f" ({cost_source})" if cost_source else "")
