"""The ``vwm telemetry`` command (request records, or totals per worker or session), ``vwm
telemetry series`` (those totals per time bucket) and ``vwm learnings`` (what auto-learning
recorded), as tables."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

import typer

from vwm.cli.output import cost_text, print_json, print_table
from vwm.cli.root import client
from vwm.sdk.models import Learning

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


LEARNING_COLUMNS = (
    "when",
    "worker",
    "session",
    "status",
    "mode",
    "files",
    "commit",
    "branch",
    "summary",
)
SHORT_SHA = 10


class LearningStatus(StrEnum):
    recorded = "recorded"
    nothing = "nothing"
    failed = "failed"


class GroupBy(StrEnum):
    worker = "worker"
    session = "session"


class Bucket(StrEnum):
    minute = "minute"
    hour = "hour"
    day = "day"


# A group: `vwm telemetry [OPTIONS]` shows records or totals as before, `vwm telemetry series`
# the totals per time bucket.
telemetry_app = typer.Typer()  # its help: the docstring of `telemetry`, its callback


def register(app: typer.Typer) -> None:
    telemetry_app.callback(invoke_without_command=True)(telemetry)
    telemetry_app.command("series")(series)
    app.add_typer(telemetry_app, name="telemetry")
    app.command("learnings")(learnings)


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
    """Show what jobs cost: one row per job, or totals per worker or session with --summary
    (per minute, hour or day: `vwm telemetry series`)."""
    if ctx.invoked_subcommand is not None:
        return
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
        print_table([_with_money(row) for row in rows], columns, empty="no records")


def series(
    ctx: typer.Context,
    group_by: Annotated[GroupBy, typer.Option(help="Totals per worker or session.")] = (
        GroupBy.worker
    ),
    bucket: Annotated[Bucket, typer.Option(help="Per UTC minute, hour or day.")] = Bucket.hour,
    since: Annotated[
        str | None,
        typer.Option(help="From this time (ISO 8601; default: 24 h before, 90 days by day)."),
    ] = None,
    until: Annotated[str | None, typer.Option(help="Up to this time (default: now).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Show what jobs cost per time bucket and worker (or session), oldest bucket first;
    buckets without jobs are left out. At most 2000 buckets: narrow the window or take a
    larger bucket."""
    rows = client(ctx).telemetry.series(group_by.value, bucket.value, since=since, until=until)
    if as_json:
        print_json(rows)
        return
    columns = (
        "start",
        group_by.value,
        "jobs",
        "tokens.input",
        "tokens.cache_read",
        "tokens.cache_write",
        "tokens.output",
        "cost_usd",
    )
    print_table([_with_money(row) for row in rows], columns, empty="no jobs in this window")


def _with_money(row: dict[str, Any]) -> dict[str, Any]:
    """The row with its costs (``cost_usd``, ``total_cost_usd``, ...) as money, or in words when
    unknown; the JSON output keeps the numbers."""
    return {
        key: (cost_text(value, None) if key.endswith("cost_usd") else value)
        for key, value in row.items()
    }


def learnings(
    ctx: typer.Context,
    worker: Annotated[str | None, typer.Option(help="Only this worker.")] = None,
    session: Annotated[str | None, typer.Option(help="Only this session (id).")] = None,
    status: Annotated[LearningStatus | None, typer.Option(help="Only this outcome.")] = None,
    since: Annotated[str | None, typer.Option(help="From this time (ISO 8601).")] = None,
    until: Annotated[str | None, typer.Option(help="Up to this time (ISO 8601).")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many records.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Show what auto-learning recorded at the end of sessions, newest first."""
    records = client(ctx).telemetry.learnings(
        worker=worker,
        session_id=session,
        status=status.value if status is not None else None,
        since=since,
        until=until,
        limit=limit,
    )
    if as_json:
        print_json([dict(record.raw) for record in records])
    else:
        rows = [_learning_row(record) for record in records]
        print_table(rows, LEARNING_COLUMNS, empty="no learnings")


def _learning_row(record: Learning) -> dict[str, Any]:
    lines = record.summary.strip().splitlines()
    summary = lines[0] if lines else str((record.error or {}).get("message") or "")
    return {
        "when": _when(record.created_at),
        "worker": record.worker,
        "session": record.session_id,
        "status": record.status,
        "mode": record.mode,
        "files": len(record.files_changed),
        "commit": (record.commit or "")[:SHORT_SHA],
        "branch": record.branch,
        "summary": summary,
    }


def _when(timestamp: str | None) -> str | None:
    """An API timestamp to the second (UTC), as a table shows it."""
    try:
        moment = datetime.fromisoformat(timestamp or "")
    except ValueError:
        return timestamp
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
