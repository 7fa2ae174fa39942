"""Session commands: ``vwm session start|list|get|budget|end``."""

from __future__ import annotations

from itertools import islice
from typing import Annotated

import typer

from vwm.cli.budget_limits import parse_limit
from vwm.cli.output import print_json, print_table, spinner, stderr
from vwm.cli.root import client
from vwm.sdk.sessions import VWSession

session_app = typer.Typer(help="Sessions: a worker's workspace with a running coding-agent CLI.")


def register(app: typer.Typer) -> None:
    app.add_typer(session_app, name="session", no_args_is_help=True)


@session_app.command("start")
def session_start(
    ctx: typer.Context,
    worker: str,
    session_repo: Annotated[
        str | None, typer.Option(help="URL of the repository to work in.")
    ] = None,
    branch: Annotated[str, typer.Option(help="Branch of --session-repo.")] = "main",
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Wait until the session is ready.")
    ] = True,
    idempotency_key: Annotated[
        str | None,
        typer.Option(
            help="Run again with the same key, answer the session the first run started "
            "instead of starting another."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the session as JSON.")] = False,
) -> None:
    """Start a session of WORKER and print its id."""
    repo = {"url": session_repo, "branch": branch} if session_repo else None
    with spinner(f"starting a session of {worker}…"):
        session = (
            client(ctx)
            .worker(worker)
            .session(session_repo=repo, wait=wait, idempotency_key=idempotency_key)
        )
    if as_json:
        print_json(session.data)
        return
    typer.echo(session.id)
    stderr().print(f"[dim]session {session.id} of {worker} is {session.status}[/dim]")


@session_app.command("list")
def session_list(
    ctx: typer.Context,
    worker: Annotated[str | None, typer.Option(help="Only this worker's sessions.")] = None,
    status: Annotated[str | None, typer.Option(help="Only sessions in this status.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List sessions."""
    sessions = islice(client(ctx).sessions(worker=worker, status=status), limit)
    rows = [session.data for session in sessions]
    if as_json:
        print_json(rows)
    else:
        columns = ("id", "worker", "status", "created_at", "session_repo.url")
        print_table(rows, columns, empty="no sessions")


@session_app.command("get")
def session_get(
    ctx: typer.Context, session_id: Annotated[str, typer.Argument(metavar="ID")]
) -> None:
    """Show a session."""
    print_json(client(ctx).get_session(session_id).data)


@session_app.command("budget")
def session_budget(
    ctx: typer.Context,
    session_id: Annotated[str, typer.Argument(metavar="ID")],
    tokens: Annotated[
        str | None, typer.Option(help="Tokens over the session; none: no limit.")
    ] = None,
    usd: Annotated[str | None, typer.Option(help="USD over the session; none: no limit.")] = None,
) -> None:
    """Show a session's budget (limits, used, left, state), or set the limits given."""
    api = client(ctx)
    limits: dict[str, int | float | None] = {}
    if tokens is not None:
        limits["tokens"] = parse_limit(tokens, "--tokens", tokens=True)
    if usd is not None:
        limits["usd"] = parse_limit(usd, "--usd", tokens=False)
    if limits:
        print_json(VWSession(api, {"id": session_id}).set_budget(**limits))
    else:
        print_json(api.get_session(session_id).data.get("budget"))


@session_app.command("end")
def session_end(
    ctx: typer.Context,
    session_id: Annotated[str, typer.Argument(metavar="ID")],
    learn: Annotated[
        bool,
        typer.Option(
            "--learn/--no-learn", help="Run the worker's auto-learning first, if it has it on."
        ),
    ] = True,
) -> None:
    """End a session: learn, save the transcript, commit and push, tear it down."""
    with spinner(f"ending session {session_id}…"):
        session = VWSession(client(ctx), {"id": session_id}).end(learn=learn)
    print_json(session.data)
