"""Prompt and job commands: ``vwm prompt`` and ``vwm job get|cancel|events|calls``."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import asdict
from typing import Annotated

import typer

from vwm.cli.live import LiveView
from vwm.cli.output import print_json, print_table, spinner, stderr
from vwm.cli.root import client
from vwm.sdk.client import Client
from vwm.sdk.jobs import Job
from vwm.sdk.models import Event, JobResult
from vwm.sdk.sessions import VWSession

job_app = typer.Typer(help="Jobs: one prompt run in a session.")

JobId = Annotated[str, typer.Argument(metavar="ID", help="The job id.")]

CALL_COLUMNS = (
    "seq",
    "api",
    "model",
    "streamed",
    "status",
    "outcome",
    "usage.input",
    "usage.cache_read",
    "usage.cache_write",
    "usage.output",
    "latency_ms",
    "ttft_ms",
    "error",
)


def register(app: typer.Typer) -> None:
    app.command("prompt")(prompt)
    app.add_typer(job_app, name="job", no_args_is_help=True)


def prompt(
    ctx: typer.Context,
    session_id: Annotated[str, typer.Argument(metavar="SESSION_ID")],
    text: Annotated[str, typer.Argument(metavar="TEXT", help="The prompt; - reads it from stdin.")],
    as_json: Annotated[
        bool, typer.Option("--json", help="Wait, then print the finished job as JSON.")
    ] = False,
    run_async: Annotated[
        bool,
        typer.Option("--async", help="Print the job id at once; follow with `vwm job events`."),
    ] = False,
    timeout_s: Annotated[
        int | None, typer.Option(min=1, help="Wall-clock limit of the job, in seconds.")
    ] = None,
    idempotency_key: Annotated[
        str | None, typer.Option(help="A retried prompt with the same key runs once.")
    ] = None,
) -> None:
    """Send a prompt to a session and stream the answer.

    The answer goes to stdout as it arrives; tool calls and the final status line (tokens, cost)
    go to stderr. The exit status is 1 when the job does not succeed.
    """
    if as_json and run_async:
        raise typer.BadParameter("--json and --async do not go together")
    if text == "-":
        text = sys.stdin.read()
    sdk = client(ctx)
    session = VWSession(sdk, {"id": session_id})
    if run_async:
        job = session.submit(text, timeout_s=timeout_s, idempotency_key=idempotency_key)
        typer.echo(job.id)
        stderr().print(f"[dim]follow it with: vwm job events {job.id}[/dim]")
        return
    if as_json:
        with spinner("waiting for the worker…"):
            result = session.prompt(text, timeout_s=timeout_s, idempotency_key=idempotency_key)
        print_json(dict(result.raw))
        _exit_for(result)
        return
    events = session.stream(text, timeout_s=timeout_s, idempotency_key=idempotency_key)
    _exit_for(_live(sdk, events, cancel_on_interrupt=True))


@job_app.command("get")
def job_get(ctx: typer.Context, job_id: JobId) -> None:
    """Show a job."""
    print_json(client(ctx).get_job(job_id).data)


@job_app.command("cancel")
def job_cancel(ctx: typer.Context, job_id: JobId) -> None:
    """Cancel a running job."""
    print_json(Job(client(ctx), {"id": job_id}).cancel().data)


@job_app.command("events")
def job_events(
    ctx: typer.Context,
    job_id: JobId,
    after: Annotated[int, typer.Option(min=0, help="Start after this event number.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON event per line.")] = False,
) -> None:
    """Follow a job's events until it finishes (the answer as `vwm prompt` shows it)."""
    sdk = client(ctx)
    events = Job(sdk, {"id": job_id}).events(after=after)
    if not as_json:
        _exit_for(_live(sdk, events, cancel_on_interrupt=False))
        return
    for event in events:
        typer.echo(json.dumps(asdict(event), ensure_ascii=False))


@job_app.command("calls")
def job_calls(
    ctx: typer.Context,
    job_id: JobId,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Show a finished job's model calls: tokens, status and latency of each."""
    calls = client(ctx).calls(job_id)
    if as_json:
        print_json(calls)
    else:
        print_table(calls, CALL_COLUMNS, empty="no model calls recorded")


def _live(sdk: Client, events: Iterator[Event], *, cancel_on_interrupt: bool) -> JobResult | None:
    """Show events live. Ctrl-C exits with 130, cancelling the job if asked to."""
    view = LiveView()
    try:
        return view.follow(events)
    except KeyboardInterrupt:
        if view.job_id is None:
            stderr().print("interrupted before the job started")
        elif cancel_on_interrupt:
            Job(sdk, {"id": view.job_id}).cancel()
            stderr().print(f"interrupted: cancelled job {view.job_id}")
        else:
            stderr().print(f"stopped following job {view.job_id}; it goes on")
        raise typer.Exit(130) from None


def _exit_for(result: JobResult | None) -> None:
    if result is None or not result.ok:
        raise typer.Exit(1)
