"""The ``vwm telemetry`` command: request records, or totals per worker or session, as a table."""

from __future__ import annotations

from typing import Annotated

import typer

from vwm.cli.output import print_json, print_table
from vwm.cli.root import client

REQUEST_COLUMNS = (
    "job_id",
    "worker",
    "session_id",
    "model",
    "status",
    "tokens.input",
    "tokens.cache_read",
    "tokens.output",
    "cost_usd",
    "cost_source",
    "durations_ms.total",
    "created_at",
)


def register(app: typer.Typer) -> None:
    app.command("telemetry")(telemetry)


def telemetry(
    ctx: typer.Context,
    worker: Annotated[str | None, typer.Option(help="Only this worker.")] = None,
    session: Annotated[str | None, typer.Option(help="Only this session (id).")] = None,
    since: Annotated[str | None, typer.Option(help="From this time (ISO 8601).")] = None,
    until: Annotated[str | None, typer.Option(help="Up to this time (ISO 8601).")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many records.")] = None,
    summary: Annotated[bool, typer.Option("--summary", help="Totals per group instead.")] = False,
    group_by: Annotated[str, typer.Option(help="With --summary: worker or session.")] = "worker",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Show what jobs cost: one row per job, or totals per worker or session with --summary."""
    api = client(ctx).telemetry
    if summary:
        rows = api.summary(group_by, since=since, until=until)
        columns: tuple[str, ...] = ()
    else:
        rows = api.requests(
            worker=worker, session_id=session, since=since, until=until, limit=limit
        )
        columns = REQUEST_COLUMNS
    if as_json:
        print_json(rows)
    else:
        print_table(rows, columns, empty="no records")
